"""The database layer on SQLite and on the local PostgreSQL: one transaction per message, UTC times,
NUL-free text, and the ledger that stops a message from being recorded twice."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dbreset import empty_database
from ticketure_mail.acknowledgement import OutgoingMail, TicketFacts
from ticketure_mail.config import load_settings
from ticketure_mail.decisions import Plan, Source, decide
from ticketure_mail.deadlines import policy_from_settings
from ticketure_mail.loops import HUMAN
from ticketure_mail.model import Attachment, Outcome
from ticketure_mail.store import DuplicateMessage, Store
from ticketure_mail.urgency import UrgencyRule

from mailfactory import parsed

SETTINGS = load_settings(Path(__file__).resolve().parents[1] / "config.example.toml")
NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.from_url(db_url, "TKT")
    # The PostgreSQL database is shared by the session: start every test from empty tables.
    empty_database(s.engine)
    s.upgrade_schema()
    yield s
    s.close()


def plan_for(mail, candidate=None) -> Plan:
    return decide(mail, source=Source("imap", "INBOX", 7, 1), received_at=NOW, candidate=candidate,
                  verdict=HUMAN, urgency=UrgencyRule(SETTINGS.urgency.markers), policy=policy_from_settings(SETTINGS),
                  acknowledge_followups=False)


def fake_ack(plan: Plan, facts: TicketFacts) -> OutgoingMail:
    return OutgoingMail(f"ack-{facts.reference}@ticketure.com", "client@example.com", "", f"[{facts.reference}]",
                        b"Subject: ack\r\n\r\nhello\r\n")


def test_new_ticket_message_ledger_and_outbox_in_one_go(store: Store) -> None:
    mail = parsed(subject="Urgent: site down", message_id="m1@example.com",
                  attachments=(Attachment("report.pdf", "application/pdf", b"%PDF-1.4"),))
    result = store.apply(plan_for(mail), b"raw bytes", NOW, fake_ack)
    assert result.outcome == Outcome.CREATED
    assert result.ticket == "TKT-000001"
    assert result.priority == 1 and result.ack
    ticket = store.ticket("TKT-000001")
    assert ticket is not None
    assert ticket.due_at == NOW + timedelta(minutes=15)
    assert ticket.due_at.tzinfo is not None and ticket.received_at == NOW
    [(message, files)] = store.ticket_messages(ticket.id)
    assert message.message_id == "m1@example.com" and message.raw == b"raw bytes"
    assert [(f.filename, f.size) for f in files] == [("report.pdf", 8)]
    assert store.is_processed("mid:m1@example.com")
    [pending] = store.due_outbox(NOW)
    assert pending.ticket_id == ticket.id and pending.message_id == "ack-TKT-000001@ticketure.com"


def test_a_second_apply_of_the_same_message_is_refused_whole(store: Store) -> None:
    mail = parsed(message_id="same@example.com")
    store.apply(plan_for(mail), b"raw", NOW, fake_ack)
    with pytest.raises(DuplicateMessage):
        store.apply(plan_for(mail), b"raw", NOW, fake_ack)
    assert len(store.tickets()) == 1
    assert len(store.due_outbox(NOW)) == 1


def test_an_ack_failure_rolls_back_the_ticket(store: Store) -> None:
    def broken_ack(plan: Plan, facts: TicketFacts) -> OutgoingMail:
        raise RuntimeError("template exploded")

    with pytest.raises(RuntimeError):
        store.apply(plan_for(parsed(message_id="rollback@example.com")), b"raw", NOW, broken_ack)
    assert store.tickets() == []
    assert not store.is_processed("mid:rollback@example.com")


def test_thread_lookup_by_headers_outbound_ids_and_subject(store: Store) -> None:
    first = store.apply(plan_for(parsed(message_id="root@example.com")), b"r", NOW, fake_ack)
    by_inbound = store.find_thread(parsed(subject="Re: x", message_id="r1@example.com", in_reply_to=("root@example.com",)))
    assert by_inbound is not None and by_inbound.reference == first.ticket and by_inbound.matched_by == "in-reply-to"
    [pending] = store.due_outbox(NOW)
    store.mark_sent(pending, NOW)
    by_ack = store.find_thread(parsed(subject="Re: x", message_id="r2@example.com", references=(pending.message_id,)))
    assert by_ack is not None and by_ack.matched_by == "references"
    by_subject = store.find_thread(parsed(subject=f"Re: [{first.ticket}] x", message_id="r3@example.com"))
    assert by_subject is not None and by_subject.matched_by == "subject-reference"
    assert "client@example.com" in by_subject.participants
    assert store.find_thread(parsed(subject="Re: [TKT-009999] x", message_id="r4@example.com")) is None


def test_text_with_nul_and_control_bytes_is_stored_on_every_backend(store: Store) -> None:
    # The parser removes NUL from text; raw bytes keep it and live in a binary column.
    mail = parsed(subject="zero", message_id="nul@example.com", body_text="before after")
    store.apply(plan_for(mail), b"raw\x00with nul", NOW, fake_ack)
    [(message, _)] = store.ticket_messages(store.tickets()[0].id)
    assert message.raw == b"raw\x00with nul"


def test_outbox_retry_and_failure_bookkeeping(store: Store) -> None:
    store.apply(plan_for(parsed(message_id="o@example.com")), b"r", NOW, fake_ack)
    [item] = store.due_outbox(NOW)
    store.mark_retry(item.id, "451 try later", NOW + timedelta(minutes=5))
    assert store.due_outbox(NOW) == []
    [again] = store.due_outbox(NOW + timedelta(minutes=5))
    assert again.attempts == 1 and again.last_error == "451 try later"
    store.mark_failed(item.id, "550 no such user")
    assert [i.status for i in store.outbox_items()] == ["failed"]
    assert store.requeue_outbox(item.id, NOW)
    assert not store.requeue_outbox(item.id, NOW)  # only a failed row can be requeued
    assert [i.status for i in store.outbox_items()] == ["pending"]


def test_a_sent_row_records_when_and_shows_in_the_ticket_history(store: Store) -> None:
    result = store.apply(plan_for(parsed(message_id="s@example.com")), b"r", NOW, fake_ack)
    [item] = store.claim_due_outbox(NOW, 10, timedelta(minutes=5), "host:1:a")
    store.mark_sent(item, NOW + timedelta(seconds=3))
    [sent] = store.outbox_items(("sent",))
    assert sent.sent_at == NOW + timedelta(seconds=3) and sent.sent_at.tzinfo is not None
    assert sent.attempts == 1 and sent.last_error == ""
    assert store.claim_owners("host:") == set()
    ticket = store.ticket(result.ticket)
    kinds = [(m.direction, m.kind, m.message_id) for m, _ in store.ticket_messages(ticket.id)]
    assert kinds == [("inbound", "request", "s@example.com"), ("outbound", "acknowledgement", item.message_id)]


def test_mailbox_position_never_moves_back(store: Store) -> None:
    assert store.last_uid("INBOX", 42) is None
    store.set_last_uid("INBOX", 42, 10)
    store.set_last_uid("INBOX", 42, 5)
    assert store.last_uid("INBOX", 42) == 10
    assert store.last_uid("INBOX", 43) is None  # a new UIDVALIDITY starts afresh


def test_a_message_quarantined_twice_has_one_entry(store: Store) -> None:
    # After a crash between the quarantine row and the IMAP move, the message is fetched and
    # quarantined again: the same entry, with the latest reason.
    source = Source("imap", "INBOX", 1, 43)
    first = store.quarantine(source=source, reason="cannot parse", raw=b"junk", size=4, received_at=NOW, now=NOW)
    again = store.quarantine(source=source, reason="parser timed out", raw=b"junk", size=4, received_at=NOW, now=NOW)
    other = store.quarantine(source=Source("imap", "INBOX", 1, 44), reason="x", raw=b"j", size=1, received_at=NOW,
                             now=NOW)
    assert again == first and other != first
    assert [(r.uid, r.reason) for r in store.held_quarantine()] == [(43, "parser timed out"), (44, "x")]


def test_quarantine_rows(store: Store) -> None:
    row_id = store.quarantine(source=Source("imap", "INBOX", 1, 9), reason="cannot parse", raw=b"junk",
                              size=4, received_at=NOW, now=NOW)
    [held] = store.held_quarantine()
    assert held.id == row_id and held.uid == 9 and held.raw == b"junk"
    store.release_quarantine(row_id, NOW)
    assert store.held_quarantine() == []


def test_thread_index_joins_only_same_sender_and_subject(store: Store) -> None:
    root_header = {"Thread-Index": "AdrBLn8waxwtPk9QYXKDlKW2x9jp+g=="}
    reply_header = {"Thread-Index": "AdrBLn8waxwtPk9QYXKDlKW2x9jp+gAAChss"}
    first = store.apply(plan_for(parsed(subject="Scanner fails", message_id="ti-0@example.com", headers=root_header)),
                        b"r", NOW, fake_ack)
    found = store.find_thread(parsed(subject="RE: Scanner fails", message_id="ti-1@example.com", headers=reply_header))
    assert found is not None and found.reference == first.ticket and found.matched_by == "thread-index"
    assert store.find_thread(parsed(subject="RE: Scanner fails", from_addr="other@example.com",
                                    message_id="ti-2@example.com", headers=reply_header)) is None
    assert store.find_thread(parsed(subject="RE: Something else", message_id="ti-3@example.com",
                                    headers=reply_header)) is None


def test_an_alert_is_recorded_once_per_ticket_stage_and_deadline(store: Store) -> None:
    store.apply(plan_for(parsed(message_id="alert@example.com")), b"r", NOW, fake_ack)
    [ticket] = store.tickets()
    alert = OutgoingMail("alert-1@ticketure.com", "leads@ticketure.com", "", "[TKT-000001] due", b"Subject: a\r\n\r\nx\r\n")
    assert store.record_alert(ticket.id, "breached", ticket.due_at, alert, NOW)
    again = OutgoingMail("alert-2@ticketure.com", "leads@ticketure.com", "", "[TKT-000001] due", b"Subject: a\r\n\r\nx\r\n")
    # A second daemon, or a run that raced this one: refused whole, its mail not queued.
    assert not store.record_alert(ticket.id, "breached", ticket.due_at, again, NOW)
    assert [i.message_id for i in store.due_outbox(NOW) if i.kind == "alert"] == ["alert-1@ticketure.com"]
    assert store.raised_alerts([ticket.id]) == {(ticket.id, "breached", ticket.due_at)}
    # Alerted as breached for its deadline: nothing left to watch; a moved deadline is watched again.
    assert store.unanswered_due_by(NOW + timedelta(days=30)) == []
    assert store.record_alert(ticket.id, "breached", ticket.due_at + timedelta(hours=1), None, NOW)


def test_find_tickets_filters(store: Store) -> None:
    store.apply(plan_for(parsed(subject="Urgent: down", message_id="f1@example.com")), b"r", NOW, fake_ack)
    store.apply(plan_for(parsed(subject="Printer", message_id="f2@example.com")), b"r", NOW, fake_ack)
    later = NOW + timedelta(hours=2)
    assert [t.reference for t in store.find_tickets(overdue_at=later)] == ["TKT-000001"]
    assert [t.reference for t in store.find_tickets(priority=3)] == ["TKT-000002"]
    assert [t.reference for t in store.find_tickets(request_type="urgent", status="open")] == ["TKT-000001"]
    assert store.find_tickets(received_since=later) == []


def test_claims_are_exclusive_until_released_or_expired(store: Store) -> None:
    for n in range(3):
        store.apply(plan_for(parsed(message_id=f"claim-{n}@example.com")), b"r", NOW, fake_ack)
    lease = timedelta(minutes=5)
    first = store.claim_due_outbox(NOW, 2, lease, "host:1:a")
    second = store.claim_due_outbox(NOW, 10, lease, "host:2:b")
    assert len(first) == 2 and len(second) == 1
    assert not {i.id for i in first} & {i.id for i in second}
    assert store.claim_due_outbox(NOW, 10, lease, "host:3:c") == []
    store.release_claims([first[0].id])
    assert [i.id for i in store.claim_due_outbox(NOW, 10, lease, "host:3:c")] == [first[0].id]
    assert store.claim_owners("host:") == {"host:1:a", "host:2:b", "host:3:c"}
    assert store.release_claims_of(["host:2:b"]) == 1
    assert [i.id for i in store.claim_due_outbox(NOW, 10, lease, "host:4:d")] == [second[0].id]
    # A lease that ran out frees the row for anyone.
    assert len(store.claim_due_outbox(NOW + lease + timedelta(seconds=1), 10, lease, "other:9:z")) == 3


def test_taking_due_outbox_rows_reads_an_index_in_order_not_every_pending_row(tmp_path: Path) -> None:
    # With thousands of acknowledgements pending after an outage, sorting every pending row
    # (and its message bytes) for each claim of ten made sending slower the larger the backlog.
    from sqlalchemy.dialects import sqlite

    from ticketure_mail.store import _DUE_OUTBOX

    store = Store.from_url(f"sqlite:///{tmp_path / 'plan.sqlite3'}", "TKT")
    store.upgrade_schema()
    sql = str(_DUE_OUTBOX.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True}))
    with store.engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        plan = cursor.execute("EXPLAIN QUERY PLAN " + sql, (NOW.replace(tzinfo=None).isoformat(" "),) * 3 + (10, 0)).fetchall()
    steps = " / ".join(str(row[-1]) for row in plan)
    assert "TEMP B-TREE" not in steps, steps
    assert "ix_outbox_due" in steps, steps
    store.close()
