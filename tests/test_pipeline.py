"""The processor on a real database: rate limits, bounces, follow-ups, and faults that must park a
message rather than stop the poller."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dbreset import empty_database
from ticketure_mail.app import App, build_app
from ticketure_mail.clock import FrozenClock
from ticketure_mail.config import settings_from_dict
from ticketure_mail.decisions import Source
from ticketure_mail.model import Outcome

from mailfactory import raw_message

START = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def app(db_url: str, clock: FrozenClock) -> Iterator[App]:
    settings = settings_from_dict({
        "support": {"address": "support@ticketure.test"},
        "imap": {"host": "127.0.0.1", "username": "support@ticketure.test", "password_env": "UNUSED"},
        "smtp": {"host": "127.0.0.1", "from_address": "support@ticketure.test"},
        "database": {"url": db_url},
    }, "<test>")
    application = build_app(settings, clock)
    empty_database(application.store.engine)
    application.store.upgrade_schema()
    yield application
    application.close()


def ingest(app: App, raw: bytes):
    return app.processor.process(raw, Source("ingest"), app.clock.now())


def test_a_flood_from_one_address_is_acknowledged_five_times_in_ten_minutes(app: App, clock: FrozenClock) -> None:
    results = []
    for n in range(7):
        results.append(ingest(app, raw_message(subject=f"Problem {n}", sender="flood@example.com",
                                               message_id=f"<flood-{n}@example.com>")))
        clock.advance(timedelta(minutes=1))
    assert [r.outcome for r in results] == [Outcome.CREATED] * 7
    assert [r.ack for r in results] == [True] * 5 + [False] * 2
    assert "acknowledgement suppressed: rate limit" in results[5].reason
    suppressed = app.store.ticket(results[5].ticket)
    notes = [m for m, _ in app.store.ticket_messages(suppressed.id) if m.direction == "internal"]
    assert len(notes) == 1 and "rate limit" in notes[0].body_text
    clock.advance(timedelta(minutes=10))
    assert ingest(app, raw_message(subject="Later", sender="flood@example.com", message_id="<flood-x@example.com>")).ack


def dsn_for(ack_message_id: str, recipient: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        "To: support@ticketure.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: failed\r\n"
        "Status: 5.1.1\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@ticketure.test\r\nTo: {recipient}\r\nMessage-ID: <{ack_message_id}>\r\nSubject: [TKT-000001] x\r\n"
        "--B--\r\n"
    ).encode()


def test_a_bounce_of_our_acknowledgement_is_recorded_on_its_outbox_row(app: App) -> None:
    created = ingest(app, raw_message(sender="typo@exmaple.com", message_id="<bounce-me@example.com>"))
    [ack] = app.store.due_outbox(app.clock.now())
    app.store.mark_sent(ack, app.clock.now())
    result = ingest(app, dsn_for(ack.message_id, "typo@exmaple.com"))
    assert result.outcome == Outcome.THREADED and not result.ack
    assert result.ticket == created.ticket
    [row] = app.store.outbox_items(("bounced",))
    assert row.id == ack.id and row.last_error.startswith("bounced:")
    assert len(app.store.tickets()) == 1


def test_a_bounce_of_unknown_mail_is_discarded_with_its_reason(app: App) -> None:
    result = ingest(app, dsn_for("someone-else@example.org", "x@example.com"))
    assert result.outcome == Outcome.DISCARDED and "delivery status notification" in result.reason
    assert app.store.tickets() == []


def test_a_reply_to_our_acknowledgement_joins_the_ticket_quietly(app: App) -> None:
    created = ingest(app, raw_message(sender="cy@example.com", message_id="<orig@example.com>"))
    [ack] = app.store.due_outbox(app.clock.now())
    reply = raw_message(subject=f"Re: [{created.ticket}] Printer", sender="cy@example.com",
                        message_id="<reply@example.com>", headers={"In-Reply-To": f"<{ack.message_id}>"})
    result = ingest(app, reply)
    assert result.outcome == Outcome.THREADED and result.ticket == created.ticket and not result.ack
    assert len(app.store.outbox_items()) == 1


def test_a_subject_reference_from_a_stranger_opens_a_new_ticket(app: App) -> None:
    created = ingest(app, raw_message(sender="owner@example.com", message_id="<own@example.com>"))
    guess = ingest(app, raw_message(subject=f"[{created.ticket}] let me in", sender="mallory@example.net",
                                    message_id="<guess@example.net>"))
    assert guess.outcome == Outcome.CREATED and guess.ticket != created.ticket
    own = ingest(app, raw_message(subject=f"[{created.ticket}] more detail", sender="owner@example.com",
                                  message_id="<more@example.com>"))
    assert own.outcome == Outcome.THREADED and own.ticket == created.ticket


def test_an_urgent_follow_up_escalates_and_is_acknowledged(app: App, clock: FrozenClock) -> None:
    created = ingest(app, raw_message(subject="Fonts look wrong", sender="di@example.com", message_id="<f@example.com>"))
    assert created.priority == 3
    clock.advance(timedelta(hours=2))
    follow = ingest(app, raw_message(subject=f"Re: [{created.ticket}] URGENT Fonts look wrong", sender="di@example.com",
                                     message_id="<f2@example.com>", headers={"In-Reply-To": "<f@example.com>"}))
    assert follow.outcome == Outcome.THREADED and follow.ack and follow.priority == 1
    assert follow.due_at == START + timedelta(hours=2, minutes=15)
    assert [i.kind for i in app.store.outbox_items()] == ["standard", "escalated"]


def test_an_internal_error_parks_the_message_and_the_next_one_goes_on(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("a bug in classification")

    monkeypatch.setattr("ticketure_mail.pipeline.decide", explode)
    parked = ingest(app, raw_message(message_id="<bug@example.com>"))
    assert parked.outcome == Outcome.QUARANTINED and "RuntimeError: a bug in classification" in parked.reason
    monkeypatch.undo()
    assert ingest(app, raw_message(message_id="<fine@example.com>")).outcome == Outcome.CREATED
    [held] = app.store.held_quarantine()
    assert held.raw is not None and held.message_id == "bug@example.com"
    # After the fix, a retry of the parked message succeeds.
    assert app.processor.process(held.raw, Source("quarantine"), held.received_at).outcome == Outcome.CREATED


def test_an_unreachable_database_raises_storage_unavailable(tmp_path: Path) -> None:
    from ticketure_mail.pipeline import StorageUnavailable

    settings = settings_from_dict({
        "imap": {"host": "127.0.0.1", "username": "u", "password_env": "UNUSED"},
        "smtp": {"host": "127.0.0.1"},
        "database": {"url": "postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2"},
    }, "<test>")
    from ticketure_mail.pipeline import Processor
    from ticketure_mail.store import Store

    store = Store.from_url(settings.database.url, "TKT")
    processor = Processor(store, settings, FrozenClock(START))
    with pytest.raises(StorageUnavailable):
        processor.process(raw_message(), Source("ingest"), START)
    store.close()


HOSTILE_BUT_VALID = {
    "long-from": lambda: raw_message(sender=f"{'a' * 400}@example.com", message_id="<long-from@example.com>"),
    "long-marker": lambda: raw_message(subject="Urgent" + "-" * 200 + "Priority: down", message_id="<lm@example.com>"),
    "long-content-type": lambda: (
        b"From: c@example.com\r\nMessage-ID: <ct@example.com>\r\nSubject: ct\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
        b"--b\r\nContent-Type: application/x-" + b"y" * 300 + b"\x00z; name=a.bin\r\n"
        b"Content-Disposition: attachment; filename=a.bin\r\n\r\ndata\r\n--b--\r\n"),
    "nul-in-reply-to": lambda: (
        b'From: c@example.com\r\nReply-To: "r\x00t"@example.com\r\nMessage-ID: <nul-rt@example.com>\r\n'
        b"Subject: nul\r\n\r\nhello\r\n"),
    "long-message-id": lambda: raw_message(message_id=f"<{'m' * 1500}@example.com>"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BUT_VALID))
def test_values_a_database_column_cannot_hold_never_park_a_valid_request(app: App, case: str) -> None:
    result = ingest(app, HOSTILE_BUT_VALID[case]())
    assert result.outcome == Outcome.CREATED, result.reason
    assert app.store.held_quarantine() == []


def test_an_address_that_cannot_be_answered_gets_a_ticket_but_no_acknowledgement(app: App) -> None:
    too_long = ingest(app, HOSTILE_BUT_VALID["long-from"]())
    assert not too_long.ack and "address" in too_long.reason
    with_nul = ingest(app, HOSTILE_BUT_VALID["nul-in-reply-to"]())
    assert not with_nul.ack and "address" in with_nul.reason
    assert app.store.outbox_items() == []


def test_a_quarantine_row_the_database_refuses_falls_back_to_a_bare_one(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import DataError

    real = app.store.quarantine
    calls = []

    def refuse_once(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise DataError("INSERT", {}, Exception("value too long"))
        return real(**kwargs)

    monkeypatch.setattr(app.store, "quarantine", refuse_once)
    result = ingest(app, b"Subject: nobody\r\nMessage-ID: <q@example.com>\r\n\r\nbody\r\n")
    assert result.outcome == Outcome.QUARANTINED
    [held] = app.store.held_quarantine()
    assert held.raw is not None and "no sender" in held.reason


@pytest.mark.parametrize(
    "make",
    [
        # Upper-case letters outside ASCII: SQL lower() and Python disagree, the limit must not.
        lambda n: (f"From: {'ÄLICE' if n % 2 else 'älice'}@example.com\r\nSubject: n{n}\r\n"
                   f"Message-ID: <ae-{n}@example.com>\r\n\r\nx\r\n").encode(),
        # No From at all: the answer goes to Sender, and so does the count.
        lambda n: (f"Sender: robot@example.com\r\nSubject: n{n}\r\nMessage-ID: <nf-{n}@example.com>\r\n\r\nx\r\n").encode(),
    ],
    ids=["non-ascii-case", "no-from"],
)
def test_the_rate_limit_counts_every_spelling_of_the_answered_address(app: App, clock: FrozenClock, make) -> None:
    acks = 0
    for n in range(8):
        acks += ingest(app, make(n)).ack
        clock.advance(timedelta(seconds=30))
    assert acks == 5


def test_a_stranger_with_a_known_message_id_cannot_escalate_nor_become_a_participant(app: App) -> None:
    created = ingest(app, raw_message(subject="Payroll export (confidential)", sender="victim@example.com",
                                      message_id="<victim@example.com>"))
    for n in range(2):
        stranger = ingest(app, raw_message(subject=f"Re: [{created.ticket}] URGENT {n}", sender="mallory@example.net",
                                           message_id=f"<st-{n}@example.net>",
                                           headers={"In-Reply-To": "<victim@example.com>"}))
        assert stranger.outcome == Outcome.THREADED and not stranger.ack and stranger.priority == 3
    assert [i.recipient for i in app.store.outbox_items()] == ["victim@example.com"]
    by_subject = ingest(app, raw_message(subject=f"Re: [{created.ticket}] hello", sender="mallory@example.net",
                                         message_id="<st-x@example.net>"))
    assert by_subject.outcome == Outcome.CREATED  # writing did not make him a participant


def test_an_oversized_message_handed_to_ingest_is_kept_for_a_retry(db_url: str, clock: FrozenClock) -> None:
    settings = settings_from_dict({
        "imap": {"host": "127.0.0.1", "username": "u", "password_env": "UNUSED", "max_message_bytes": 2048},
        "smtp": {"host": "127.0.0.1"},
        "database": {"url": db_url},
    }, "<test>")
    application = build_app(settings, clock)
    empty_database(application.store.engine)
    application.store.upgrade_schema()
    try:
        raw = raw_message(message_id="<big-ingest@example.com>", body="x" * 5000 + "\n")
        result = application.processor.process(raw, Source("ingest"), START)
        assert result.outcome == Outcome.QUARANTINED and "max_message_bytes" in result.reason
        [held] = application.store.held_quarantine()
        assert held.raw == raw  # nobody else holds these bytes: the mail server was told "delivered"
    finally:
        application.close()


def test_attachments_over_the_limit_are_noted_not_stored(db_url: str, clock: FrozenClock) -> None:
    settings = settings_from_dict({
        "imap": {"host": "127.0.0.1", "username": "u", "password_env": "UNUSED"},
        "smtp": {"host": "127.0.0.1"},
        "database": {"url": db_url},
        "attachments": {"max_bytes_per_message": 1000},
    }, "<test>")
    application = build_app(settings, clock)
    empty_database(application.store.engine)
    application.store.upgrade_schema()
    try:
        raw = (b"From: c@example.com\r\nMessage-ID: <att@example.com>\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee files\r\n'
               b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=big.pdf\r\n\r\n"
               + b"x" * 5000 + b"\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=small.txt\r\n\r\n"
               b"small\r\n--b--\r\n")
        result = application.processor.process(raw, Source("ingest"), START)
        assert result.outcome == Outcome.CREATED
        messages = application.store.ticket_messages(application.store.ticket(result.ticket).id)
        stored = [f.filename for m, files in messages for f in files]
        notes = [m.body_text for m, _ in messages if m.direction == "internal"]
        assert stored == ["small.txt"]
        assert len(notes) == 1 and "big.pdf" in notes[0]
    finally:
        application.close()
