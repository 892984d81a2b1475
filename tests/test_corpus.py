"""Every case of the shared corpus through the whole pipeline, each into a fresh database.

The parse-level keys (subject, from, body, attachments) are also checked in test_parsing.py;
here they are checked as stored, together with urgency, ticket creation, threading, duplicates
and acknowledgements.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ticketure_mail.app import App, build_app
from ticketure_mail.clock import FrozenClock
from ticketure_mail.config import settings_from_dict
from ticketure_mail.decisions import Source
from ticketure_mail.model import Outcome, ProcessResult
from ticketure_mail.urgency import UrgencyRule

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def cases() -> list[str]:
    assert CORPUS.is_dir(), f"the shared corpus is missing: {CORPUS}"
    names = sorted(p.name.removesuffix(".expect.json") for p in CORPUS.glob("*.expect.json"))
    assert names, "the corpus has no cases"
    return names


def make_app(tmp_path: Path, **imap: Any) -> App:
    table = {
        "support": {"address": "help@example.org"},
        "imap": {"host": "127.0.0.1", "username": "help@example.org", "password_env": "UNUSED", **imap},
        "smtp": {"host": "127.0.0.1", "from_address": "help@example.org"},
        "database": {"url": f"sqlite:///{tmp_path / 'corpus.sqlite3'}"},
    }
    return build_app(settings_from_dict(table, "<corpus>"), FrozenClock(NOW))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    application = make_app(tmp_path)
    yield application
    application.close()


def ingest(app: App, name: str) -> ProcessResult:
    return app.processor.process((CORPUS / name).read_bytes(), Source("ingest"), NOW)


@pytest.mark.parametrize("case", cases())
def test_corpus_case(case: str, app: App) -> None:
    expect = json.loads((CORPUS / f"{case}.expect.json").read_text(encoding="utf-8"))
    base = None
    if "thread_of" in expect or "duplicate_of" in expect:
        base = ingest(app, expect.get("thread_of") or expect["duplicate_of"])
        assert base.outcome == Outcome.CREATED, base
    result = ingest(app, f"{case}.eml")
    note = expect.get("note", "")

    if "subject" in expect:
        assert result.subject == expect["subject"], note
    if "from" in expect:
        assert result.from_address == expect["from"], note
    if "urgent" in expect:
        rule = UrgencyRule(app.settings.urgency.markers, app.settings.urgency.negations)
        assert (rule.find(result.subject) is not None) == expect["urgent"], note
        if result.outcome == Outcome.CREATED:
            assert (result.priority == 1) == expect["urgent"], note
    if "creates_ticket" in expect:
        assert (result.outcome == Outcome.CREATED) == expect["creates_ticket"], (result, note)
    if "send_ack" in expect:
        assert result.ack == expect["send_ack"], (result, note)
    if "thread_of" in expect:
        assert base is not None
        assert result.outcome == Outcome.THREADED and result.ticket == base.ticket, (result, note)
    if "duplicate_of" in expect:
        assert result.outcome == Outcome.DUPLICATE, (result, note)
        assert len(app.store.tickets()) == 1 and len(app.store.outbox_items()) == 1
    if "body_contains" in expect or "attachments" in expect:
        message, files = _stored_message(app, result)
        if "body_contains" in expect:
            assert expect["body_contains"] in message.body_text, note
        if "attachments" in expect:
            assert [f.filename for f in files] == expect["attachments"], note


def _stored_message(app: App, result: ProcessResult) -> tuple[Any, list[Any]]:
    assert result.ticket is not None, result
    ticket = app.store.ticket(result.ticket)
    assert ticket is not None and ticket.id is not None
    for message, files in app.store.ticket_messages(ticket.id):
        if message.direction == "inbound" and message.message_id == result.message_id:
            return message, files
    raise AssertionError(f"message {result.message_id} not stored in {result.ticket}")


def test_oversized_message_under_a_low_limit_is_quarantined_visibly(tmp_path: Path) -> None:
    application = make_app(tmp_path, max_message_bytes=3_000_000)
    try:
        result = ingest(application, "041-oversized-message.eml")
        assert result.outcome == Outcome.QUARANTINED
        [held] = application.store.held_quarantine()
        assert "max_message_bytes" in held.reason
        assert application.store.tickets() == []
    finally:
        application.close()
