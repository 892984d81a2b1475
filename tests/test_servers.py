"""Checks that the test servers and fixtures behave as the other tests rely on."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import psycopg
import pytest
import sqlalchemy as sa
from imapclient import IMAPClient
from servers import (
    DovecotMissingError,
    DovecotServer,
    ImapAccount,
    PostgresDatabase,
    SmtpSink,
    free_port,
)


def raw_message(subject: str = "Printer on fire", body: str = "Please help.") -> bytes:
    return (
        "From: Alice Example <alice@example.com>\r\n"
        "To: support@ticketure.test\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.com>\r\n"
        "Date: Tue, 01 Dec 2026 09:30:00 +0000\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


def acknowledgement(to: str = "alice@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "support@ticketure.test"
    message["To"] = to
    message["Subject"] = "We received your request"
    message.set_content("Ticket #1 is open.\n.A line that starts with a dot\n")
    return message


def send(
    sink: SmtpSink, message: EmailMessage, **kwargs: Any
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    return asyncio.run(
        aiosmtplib.send(message, hostname=sink.host, port=sink.port, timeout=5, **kwargs)
    )


def connection_refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# ---- Dovecot -------------------------------------------------------------------------


def test_append_then_read_back_keeps_message_unseen(mailbox: ImapAccount) -> None:
    raw = raw_message()
    uid = mailbox.append(raw)

    with IMAPClient(mailbox.host, port=mailbox.port, ssl=False, timeout=10) as client:
        client.login(mailbox.username, mailbox.password)
        client.select_folder("INBOX")
        fetched = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"])

    assert fetched[uid][b"BODY[]"] == raw
    assert b"\\Seen" not in fetched[uid][b"FLAGS"]
    # Read again on a new connection: PEEK must not have stored \Seen either.
    assert mailbox.fetch_flags() == {uid: ()}


def test_append_creates_folder_and_keeps_flags_and_internal_date(mailbox: ImapAccount) -> None:
    when = datetime(2026, 11, 30, 22, 15, 0, tzinfo=timezone(timedelta(hours=-5)))
    uid = mailbox.append(
        raw_message(), folder="Tickets/Done", flags=["\\Seen", "$Acked"], internal_date=when
    )

    assert "Tickets/Done" in mailbox.folders()
    assert mailbox.list_folder_uids("Tickets/Done") == [uid]
    assert mailbox.list_folder_uids("INBOX") == []
    assert set(mailbox.fetch_flags("Tickets/Done")[uid]) == {b"\\Seen", b"$Acked"}
    with mailbox.connect() as client:
        client.normalise_times = False
        client.select_folder("Tickets/Done", readonly=True)
        stored = client.fetch([uid], ["INTERNALDATE"])[uid][b"INTERNALDATE"]
    assert stored == when


def test_uids_grow_and_each_mailbox_is_private(
    dovecot: DovecotServer, mailbox: ImapAccount
) -> None:
    first = mailbox.append(raw_message("one"))
    second = mailbox.append(raw_message("two"))
    other = dovecot.add_user(f"other-{uuid.uuid4().hex[:8]}@ticketure.test", "other-password")

    assert second > first
    assert mailbox.list_folder_uids("INBOX") == [first, second]
    assert other.list_folder_uids("INBOX") == []


def test_wrong_password_is_refused_without_slowing_later_logins(mailbox: ImapAccount) -> None:
    with pytest.raises(IMAPClient.Error):
        mailbox.server.connect(mailbox.username, mailbox.password + "-wrong")
    # Dovecot's auth penalty (2-15 s after a failure from the same address) is off.
    started = time.monotonic()
    with mailbox.connect() as client:
        client.noop()
    assert time.monotonic() - started < 1.0


def test_idle_move_and_uidplus_are_offered(mailbox: ImapAccount) -> None:
    with mailbox.connect() as client:
        capabilities = set(client.capabilities())
    assert {b"IDLE", b"MOVE", b"UIDPLUS"} <= capabilities


def test_idle_reports_mail_appended_by_another_client(mailbox: ImapAccount) -> None:
    with mailbox.connect() as client:
        client.select_folder("INBOX")
        client.idle()
        try:
            mailbox.append(raw_message())
            seen: list[object] = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(
                isinstance(r, tuple) and r[1:2] == (b"EXISTS",) for r in seen
            ):
                seen.extend(client.idle_check(timeout=1))
        finally:
            client.idle_done()
    assert (1, b"EXISTS") in seen


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "sigkill"])
def test_restart_keeps_port_and_mail_and_cuts_clients(
    dovecot: DovecotServer, mailbox: ImapAccount, graceful: bool
) -> None:
    uid = mailbox.append(raw_message())
    port = dovecot.port
    client = mailbox.connect()
    try:
        client.select_folder("INBOX")
        dovecot.restart(graceful=graceful)
        with pytest.raises((IMAPClient.AbortError, OSError)):
            client.noop()
    finally:
        client.shutdown()

    assert dovecot.port == port
    assert mailbox.list_folder_uids("INBOX") == [uid]
    assert mailbox.fetch_flags() == {uid: ()}


def test_stopped_server_refuses_then_start_resumes(
    dovecot: DovecotServer, mailbox: ImapAccount
) -> None:
    uid = mailbox.append(raw_message())
    dovecot.stop(graceful=False)
    try:
        assert connection_refused(dovecot.host, dovecot.port)
        # Accounts can be added while it is down.
        later = dovecot.add_user(f"later-{uuid.uuid4().hex[:8]}@ticketure.test", "later-pw")
    finally:
        dovecot.start()
    assert mailbox.list_folder_uids("INBOX") == [uid]
    assert later.list_folder_uids("INBOX") == []


def test_log_names_the_logins(dovecot: DovecotServer, mailbox: ImapAccount) -> None:
    with mailbox.connect() as client:
        client.noop()
    deadline = time.monotonic() + 5
    while mailbox.address not in dovecot.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"user=<{mailbox.address}>" in dovecot.log_text()


def test_missing_dovecot_binary_says_how_to_install() -> None:
    server = DovecotServer(binary="dovecot-that-is-not-installed")
    with pytest.raises(DovecotMissingError, match="scripts/setup"):
        server.start()
    server.close()


# ---- SMTP sink -----------------------------------------------------------------------


def test_sink_records_message_from_null_sender(sink: SmtpSink) -> None:
    before_mono, before_wall = time.monotonic(), datetime.now(UTC)
    errors, _reply = send(sink, acknowledgement(), sender="", recipients=["alice@example.com"])
    after_mono, after_wall = time.monotonic(), datetime.now(UTC)

    assert errors == {}
    [received] = sink.wait_for(1, timeout=5)
    assert received.mail_from == ""
    assert received.rcpt_tos == ["alice@example.com"]
    assert received.message()["Subject"] == "We received your request"
    # Dot-stuffing is undone: the data is the message as the client meant it.
    assert b"\r\n.A line that starts with a dot\r\n" in received.data
    assert before_mono <= received.received_at <= after_mono
    assert received.received_at_utc.tzinfo is UTC
    assert before_wall <= received.received_at_utc <= after_wall


def test_sink_keeps_the_envelope_sender(sink: SmtpSink) -> None:
    send(sink, acknowledgement(), sender="bounces@ticketure.test", recipients=["a@example.com"])
    assert [m.mail_from for m in sink.wait_for(1)] == ["bounces@ticketure.test"]


def test_sink_answers_451_once_then_accepts(sink: SmtpSink) -> None:
    sink.fail_next(451)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        send(sink, acknowledgement())
    [recipient_error] = refused.value.recipients
    assert recipient_error.code == 451
    assert "4.3.0" in recipient_error.message
    assert sink.messages == []

    errors, _ = send(sink, acknowledgement())
    assert errors == {}
    assert len(sink.wait_for(1)) == 1
    assert sink.refusals == 1


def test_sink_answers_550_at_data_then_accepts(sink: SmtpSink) -> None:
    sink.fail_next(550, stage="data")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        send(sink, acknowledgement())
    assert refused.value.code == 550
    assert "5.1.1 No such user" in refused.value.message

    send(sink, acknowledgement())
    assert len(sink.wait_for(1)) == 1


def test_sink_fails_until_told_to_stop(sink: SmtpSink) -> None:
    sink.fail_next(451, count=None)
    for _ in range(3):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            send(sink, acknowledgement())
    sink.stop_failing()
    send(sink, acknowledgement())
    assert len(sink.wait_for(1)) == 1
    assert sink.refusals == 3


def test_sink_refuses_one_of_two_recipients(sink: SmtpSink) -> None:
    sink.fail_next(550, count=1)
    errors, _ = send(sink, acknowledgement(), recipients=["gone@example.com", "bob@example.com"])
    assert set(errors) == {"gone@example.com"}
    assert errors["gone@example.com"].code == 550
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["bob@example.com"]


def test_sink_without_smtputf8_refuses_non_ascii_address(sink: SmtpSink) -> None:
    with pytest.raises(aiosmtplib.SMTPNotSupported):
        send(sink, acknowledgement(to="jürgen@example.com"))
    assert sink.messages == []


def test_sink_with_smtputf8_accepts_non_ascii_address() -> None:
    with SmtpSink(enable_smtputf8=True) as utf8_sink:
        send(utf8_sink, acknowledgement(to="jürgen@example.com"))
        assert utf8_sink.wait_for(1)[0].rcpt_tos == ["jürgen@example.com"]


def test_sink_with_auth_requires_the_right_login() -> None:
    with SmtpSink(auth=("relay-user", "relay-secret")) as auth_sink:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as anonymous:
            send(auth_sink, acknowledgement())
        assert anonymous.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            send(auth_sink, acknowledgement(), username="relay-user", password="wrong")
        send(auth_sink, acknowledgement(), username="relay-user", password="relay-secret")
        [received] = auth_sink.wait_for(1)
    assert received.login == "relay-user"


def test_sink_answers_421_and_hangs_up(sink: SmtpSink) -> None:
    sink.fail_next(421)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        send(sink, acknowledgement())
    assert refused.value.recipients[0].code == 421
    # The connection is gone: a client that ignored the 421 and went on would fail.
    client = smtplib.SMTP(sink.host, sink.port, timeout=5)
    try:
        client.ehlo()
        sink.fail_next(421)
        client.mail("support@ticketure.test")
        assert client.rcpt("alice@example.com")[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    finally:
        client.close()
    send(sink, acknowledgement())
    assert len(sink.wait_for(1)) == 1


def test_wait_for_times_out_with_what_arrived(sink: SmtpSink) -> None:
    send(sink, acknowledgement())
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="got 1"):
        sink.wait_for(2, timeout=0.3)
    assert time.monotonic() - started < 2


def test_fail_next_rejects_codes_that_are_not_refusals(sink: SmtpSink) -> None:
    with pytest.raises(ValueError):
        sink.fail_next(250)


def test_sink_stop_is_idempotent_and_frees_the_port() -> None:
    own = SmtpSink().start()
    port = own.port
    own.stop()
    own.stop()
    assert connection_refused(own.host, port)


# ---- PostgreSQL ----------------------------------------------------------------------


def test_postgres_url_connects_with_sqlalchemy(
    postgres_url: str, postgres_database: PostgresDatabase
) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            name = connection.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert name == postgres_database.name


def test_db_url_stores_and_reads_back(db_url: str) -> None:
    # A table name of its own: the postgresql URL is shared by the whole session.
    metadata = sa.MetaData()
    table = sa.Table(
        f"probe_{uuid.uuid4().hex[:12]}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject", sa.Text, nullable=False),
    )
    engine = sa.create_engine(db_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(table.insert(), [{"subject": "Printer on fire"}])
        with engine.connect() as connection:
            rows = connection.execute(sa.select(table.c.subject)).scalars().all()
        metadata.drop_all(engine)
    finally:
        engine.dispose()
    assert rows == ["Printer on fire"]


def test_postgres_database_drop_ends_open_connections() -> None:
    database = PostgresDatabase().create()
    leftover = psycopg.connect(database.conninfo)
    try:
        database.drop()
        database.drop()
    finally:
        leftover.close()
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as check:
        found = check.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (database.name,)
        ).fetchone()
    assert found == (0,)


# ---- helpers -------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert listener.getsockname()[1] == port
