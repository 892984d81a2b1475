"""The main job on real servers: mail in Dovecot -> one cycle -> tickets, flags, acknowledgements."""

from collections.abc import Iterator
import logging
from datetime import UTC, datetime, timedelta
from email.header import Header
from pathlib import Path

import pytest
from servers import ImapAccount, SmtpSink

from dbreset import empty_database
from ticketure_mail.app import App, build_app
from ticketure_mail.clock import FrozenClock

from appfactory import settings_for
from mailfactory import raw_message

ARRIVAL = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # a Thursday


@pytest.fixture
def app(mailbox: ImapAccount, sink: SmtpSink, db_url: str, tmp_path: Path) -> Iterator[App]:
    application = build_app(settings_for(mailbox, sink, db_url, tmp_path), FrozenClock(ARRIVAL + timedelta(seconds=5)))
    empty_database(application.store.engine)
    application.store.upgrade_schema()
    yield application
    application.close()


def test_one_cycle_turns_the_mailbox_into_tickets_and_acknowledgements(
    app: App, mailbox: ImapAccount, sink: SmtpSink
) -> None:
    encoded = Header("Drucker druckt nicht – Büro 3", "utf-8").encode()
    messages = {
        "urgent": raw_message(subject="Urgent: payments cannot be processed", sender="Ana <ana@example.com>",
                              message_id="<u1@example.com>"),
        "urgent-priority": raw_message(subject="[Urgent-Priority] site hacked", sender="bo@example.com",
                                       message_id="<u2@example.com>"),
        "urgent priority": raw_message(subject="Re: Urgent Priority barcodes cannot be scanned",
                                       sender="cy@example.com", message_id="<u3@example.com>"),
        "plain": raw_message(subject="Cart rule change for the winter sale", sender="di@example.com",
                             message_id="<p1@example.com>"),
        "encoded": raw_message(subject=encoded, sender="Eva <eva@example.de>", message_id="<e1@example.com>"),
    }
    uids = {name: mailbox.append(raw, internal_date=ARRIVAL) for name, raw in messages.items()}

    report = app.poller().cycle()

    assert report.outcomes == {"created": 5}
    assert report.delivery.sent == 5
    tickets = {t.requester: t for t in app.store.tickets()}
    assert {a: t.priority for a, t in tickets.items()} == {
        "ana@example.com": 1, "bo@example.com": 1, "cy@example.com": 1, "di@example.com": 3, "eva@example.de": 3,
    }
    assert tickets["ana@example.com"].due_at == ARRIVAL + timedelta(minutes=15)
    assert tickets["di@example.com"].due_at == ARRIVAL + timedelta(hours=24)  # Thursday -> Friday
    assert tickets["eva@example.de"].subject == "Drucker druckt nicht – Büro 3"

    flags = mailbox.fetch_flags()
    assert all(b"\\Seen" in flags[uid] for uid in uids.values())

    received = {m.rcpt_tos[0]: m for m in sink.wait_for(5)}
    assert set(received) == set(tickets)
    for address, ticket in tickets.items():
        envelope = received[address]
        assert envelope.mail_from == ""  # null sender, RFC 3834
        msg = envelope.message()
        assert msg["Subject"].startswith(f"[{ticket.reference}] ")
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["In-Reply-To"] is not None
        body = msg.get_body(preferencelist=("plain",)).get_content()
        assert ticket.reference in body
        assert "844-830-9595" in body and "+44 0800 031 8902" in body
        local_due = ticket.due_at.astimezone(app.settings.timezone)
        assert f"{local_due:%H:%M}" in body and "Europe/London" in body
    assert received["ana@example.com"].message()["In-Reply-To"] == "<u1@example.com>"
    assert received["eva@example.de"].message()["Subject"] == f"[{tickets['eva@example.de'].reference}] Drucker druckt nicht – Büro 3"


def test_a_second_cycle_finds_nothing_new_and_sends_nothing_again(app: App, mailbox: ImapAccount, sink: SmtpSink) -> None:
    mailbox.append(raw_message(message_id="<once@example.com>"), internal_date=ARRIVAL)
    poller = app.poller()
    assert poller.cycle().outcomes == {"created": 1}
    second = poller.cycle()
    assert second.outcomes == {} and second.delivery.sent == 0
    assert len(sink.wait_for(1)) == 1
    assert len(app.store.tickets()) == 1


def test_redelivered_copy_after_a_crash_is_a_duplicate(app: App, mailbox: ImapAccount, sink: SmtpSink) -> None:
    raw = raw_message(message_id="<twice@example.com>")
    mailbox.append(raw, internal_date=ARRIVAL)
    app.poller().cycle()
    # The same message again, unseen, as if the \Seen flag had never been stored.
    mailbox.append(raw.replace(b"Message-ID: <twice", b"Message-ID:   <twice"), internal_date=ARRIVAL)
    report = app.poller().cycle()
    assert report.outcomes == {"duplicate": 1}
    assert len(app.store.tickets()) == 1
    assert len(sink.wait_for(1)) == 1
    assert all(b"\\Seen" in f for f in mailbox.fetch_flags().values())


def test_move_mode_moves_processed_mail(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'm.sqlite3'}", tmp_path,
                             imap={"processed_action": "move", "processed_folder": "Done"})
    application = build_app(settings, FrozenClock(ARRIVAL))
    try:
        mailbox.append(raw_message(message_id="<mv@example.com>"), internal_date=ARRIVAL)
        assert application.poller().cycle().outcomes == {"created": 1}
        assert mailbox.list_folder_uids("INBOX") == []
        assert len(mailbox.list_folder_uids("Done")) == 1
    finally:
        application.close()


def test_unparseable_and_oversized_mail_is_quarantined_and_the_rest_goes_on(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path
) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'q.sqlite3'}", tmp_path,
                             imap={"max_message_bytes": 20_000})
    application = build_app(settings, FrozenClock(ARRIVAL))
    try:
        mailbox.append(raw_message(message_id="<big@example.com>", body="x" * 30_000 + "\n"), internal_date=ARRIVAL)
        mailbox.append(raw_message(message_id="<ok@example.com>"), internal_date=ARRIVAL)
        report = application.poller().cycle()
        assert report.outcomes == {"quarantined": 1, "created": 1}
        [held] = application.store.held_quarantine()
        assert "max_message_bytes" in held.reason and held.size > 20_000
        assert len(mailbox.list_folder_uids("Quarantine")) == 1
        assert len(mailbox.list_folder_uids("INBOX")) == 1
        # Never fetched again on the next poll.
        assert application.poller().cycle().outcomes == {}
    finally:
        application.close()


def test_a_non_ascii_password_logs_in_and_never_reaches_the_log(
    dovecot, sink: SmtpSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account = dovecot.add_user("utf8-password@ticketure.test", "pässwörd-€")
    settings = settings_for(account, sink, f"sqlite:///{tmp_path / 'u.sqlite3'}", tmp_path)
    application = build_app(settings, FrozenClock(ARRIVAL))
    try:
        account.append(raw_message(message_id="<utf8-pw@example.com>"))
        assert application.poller().cycle().outcomes == {"created": 1}
    finally:
        application.close()
    wrong = build_app(settings_for(account, sink, f"sqlite:///{tmp_path / 'w.sqlite3'}", tmp_path), FrozenClock(ARRIVAL))
    (tmp_path / "imap-password").write_text("wrüng-€\n", encoding="utf-8")
    try:
        with caplog.at_level(logging.DEBUG):
            report = wrong.poller().cycle()
        assert report.imap_error
        assert "ü" not in report.imap_error and "€" not in caplog.text and "ü" not in caplog.text
    finally:
        wrong.close()


def test_with_two_parser_processes_and_three_connections_a_backlog_is_processed_and_sent_once(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path
) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'workers.sqlite3'}", tmp_path,
                            workers={"parser_processes": 2}, imap={"batch_size": 7},
                            smtp={"connections": 3})
    application = build_app(settings, FrozenClock(ARRIVAL + timedelta(seconds=5)))
    try:
        raws = [raw_message(subject=("Urgent: " if i % 5 == 0 else "") + f"Request {i}",
                            sender=f"client{i}@example.com", message_id=f"<backlog-{i}@example.com>")
                for i in range(40)]
        for raw in [*raws, b"\r\n\r\n"]:
            mailbox.append(raw, internal_date=ARRIVAL)
        report = application.poller().cycle()
        assert report.outcomes == {"created": 40, "quarantined": 1}
        assert report.delivery.sent == 40
        received = sink.wait_for(40)
        assert sorted(m.rcpt_tos[0] for m in received) == sorted(f"client{i}@example.com" for i in range(40))
        tickets = {t.requester: t for t in application.store.tickets()}
        assert {a for a, t in tickets.items() if t.priority == 1} == {f"client{i}@example.com" for i in range(0, 40, 5)}
        assert [h.reason for h in application.store.held_quarantine()] == ["cannot parse: empty message"]
        # Nothing is sent twice, whatever the number of connections.
        assert application.poller().cycle().delivery.sent == 0
        assert len(sink.messages) == 40
    finally:
        application.close()
