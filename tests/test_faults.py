"""Faults against the real servers: a refusing or absent relay, Dovecot going away, a connection cut
mid-fetch, kill -9 in the middle of a batch, and a robot that answers every acknowledgement."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from servers import DovecotServer, ImapAccount, SmtpSink, free_port

from dbreset import empty_database
from ticketure_mail.app import App, build_app
from ticketure_mail.clock import FrozenClock
from ticketure_mail.config import settings_from_dict
from ticketure_mail.decisions import Source

from appfactory import config_table, settings_for, toml_text
from daemonproc import DaemonProcess, sqlite_count, wait_until
from mailfactory import raw_message
from tcpproxy import TcpProxy

START = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def app(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, clock: FrozenClock) -> Iterator[App]:
    application = build_app(settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'f.sqlite3'}", tmp_path), clock)
    yield application
    application.close()


def ingest_three(app: App) -> None:
    for n in range(3):
        app.processor.process(raw_message(sender=f"c{n}@example.com", message_id=f"<t{n}@example.com>"),
                              Source("ingest"), app.clock.now())


# --- SMTP ------------------------------------------------------------------------------------


def test_451_for_a_while_then_every_acknowledgement_arrives_once_late(app: App, sink: SmtpSink,
                                                                      clock: FrozenClock) -> None:
    ingest_three(app)
    delivery = app.delivery()
    sink.fail_next(451, count=None)
    for _ in range(3):
        report = delivery.deliver_due()
        assert report.sent == 0 and report.retrying == 3
        clock.advance(timedelta(minutes=10))
    assert sink.messages == []
    assert {i.attempts for i in app.store.outbox_items()} == {3}
    sink.stop_failing()
    assert delivery.deliver_due().sent == 3
    clock.advance(timedelta(hours=2))
    assert delivery.deliver_due().sent == 0
    received = sink.wait_for(3)
    assert sorted(m.rcpt_tos[0] for m in received) == ["c0@example.com", "c1@example.com", "c2@example.com"]
    assert app.store.outbox_items() == []


def test_a_retry_waits_for_its_backoff(app: App, sink: SmtpSink, clock: FrozenClock) -> None:
    ingest_three(app)
    delivery = app.delivery()
    sink.fail_next(451, count=3)
    assert delivery.deliver_due().retrying == 3
    assert delivery.deliver_due().sent == 0  # not due yet: first_retry_seconds is 30
    clock.advance(timedelta(seconds=31))
    assert delivery.deliver_due().sent == 3


def test_550_is_marked_failed_at_once_and_never_retried(app: App, sink: SmtpSink, clock: FrozenClock) -> None:
    ingest_three(app)
    sink.fail_next(550, count=1)
    report = app.delivery().deliver_due()
    assert (report.sent, report.failed) == (2, 1)
    [failed] = app.store.outbox_items()
    assert failed.status == "failed" and failed.attempts == 1 and "550" in failed.last_error
    clock.advance(timedelta(days=3))
    assert app.delivery().deliver_due().sent == 0
    assert len(sink.messages) == 2


def test_temporary_failures_give_up_after_max_attempts(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path,
                                                       clock: FrozenClock) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'g.sqlite3'}", tmp_path,
                            outbox={"max_attempts": 3, "first_retry_seconds": 1})
    application = build_app(settings, clock)
    try:
        ingest_three(application)
        sink.fail_next(451, count=None)
        for _ in range(5):
            application.delivery().deliver_due()
            clock.advance(timedelta(minutes=5))
        statuses = {(i.status, i.attempts) for i in application.store.outbox_items()}
        assert statuses == {("failed", 3)}
    finally:
        application.close()


def test_a_relay_slow_to_answer_the_end_of_data_gets_each_acknowledgement_once(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, clock: FrozenClock
) -> None:
    # Relays that scan mail may take minutes to answer the end of data (RFC 5321 allows ten).
    # Taking that for a failure would send again a message the relay had already accepted.
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'slow.sqlite3'}", tmp_path,
                            smtp={"timeout_seconds": 1.0}, outbox={"first_retry_seconds": 1, "max_attempts": 4})
    app = build_app(settings, clock)
    sink.data_delay_seconds = 2.0
    try:
        ingest_three(app)
        report = app.delivery().deliver_due()
        assert (report.sent, report.retrying, report.failed) == (3, 0, 0)
        for _ in range(4):  # any retry that was wrongly queued would go out here
            clock.advance(timedelta(minutes=10))
            app.delivery().deliver_due()
        assert len(sink.messages) == 3
    finally:
        sink.data_delay_seconds = 0.0
        app.close()


def test_an_absent_relay_is_logged_once_and_mail_waits(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path,
                                                       clock: FrozenClock, caplog: pytest.LogCaptureFixture) -> None:
    table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 'r.sqlite3'}", tmp_path / "pw")
    table["smtp"]["port"] = free_port()  # nothing listens there
    application = build_app(settings_from_dict(table, "<test>"), clock)
    try:
        ingest_three(application)
        delivery = application.delivery()
        with caplog.at_level(logging.WARNING, logger="ticketure_mail"):
            for _ in range(4):
                assert delivery.deliver_due().unavailable
                clock.advance(timedelta(minutes=1))
        outage_lines = [r for r in caplog.records if "SMTP relay unavailable" in r.getMessage()]
        assert len(outage_lines) == 1
        assert {i.status for i in application.store.outbox_items()} == {"pending"}
        # outbox list shows why they wait.
        assert all(i.last_error.startswith("relay unavailable") for i in application.store.outbox_items())
    finally:
        application.close()


# --- IMAP ------------------------------------------------------------------------------------


def test_a_connection_cut_in_the_middle_of_a_fetch_loses_and_doubles_nothing(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, clock: FrozenClock
) -> None:
    proxy = TcpProxy(mailbox.host, mailbox.port)
    table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 'cut.sqlite3'}", tmp_path / "pw",
                         imap={"port": proxy.port, "batch_size": 10})
    application = build_app(settings_from_dict(table, "<test>"), clock)
    try:
        for n in range(30):
            mailbox.append(raw_message(sender=f"cut{n}@example.com", message_id=f"<cut-{n}@example.com>",
                                       body=f"Message {n}\n" + "detail line\n" * 40))
        proxy.cut_after(25_000)  # through login and the first batch, into a later fetch
        first = application.poller().cycle()
        assert first.imap_error, "the cut should have been noticed"
        assert 0 < first.processed < 30
        proxy.cut_after(None)
        second = application.poller().cycle()
        assert not second.imap_error
        assert first.processed + second.processed - second.outcomes.get("duplicate", 0) == 30
        assert len(application.store.tickets()) == 30
        assert {t.requester for t in application.store.tickets()} == {f"cut{n}@example.com" for n in range(30)}
        assert all(b"\\Seen" in flags for flags in mailbox.fetch_flags().values())
        assert len(sink.wait_for(30)) == 30
        time.sleep(0.2)
        assert len(sink.messages) == 30
    finally:
        application.close()
        proxy.close()


def cli_config(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, **sections) -> tuple[Path, Path]:
    db_file = tmp_path / "daemon.sqlite3"
    table = config_table(mailbox, sink, f"sqlite:///{db_file}", tmp_path / "pw",
                         schedule={"poll_interval_seconds": 1}, **sections)
    path = tmp_path / "config.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    return path, db_file


def test_dovecot_stopped_and_restarted_under_a_running_daemon(
    dovecot: DovecotServer, mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path
) -> None:
    config, _ = cli_config(mailbox, sink, tmp_path)
    daemon = DaemonProcess(config)
    try:
        mailbox.append(raw_message(sender="before@example.com", message_id="<before@example.com>"))
        sink.wait_for(1, timeout=30)
        dovecot.stop()
        wait_until(lambda: "IMAP unavailable" in daemon.log(), 30, "the outage to be logged")
        time.sleep(3)  # several failed cycles
        assert daemon.alive()
        dovecot.start()
        mailbox.append(raw_message(sender="after@example.com", message_id="<after@example.com>"))
        received = sink.wait_for(2, timeout=30)
        assert sorted(m.rcpt_tos[0] for m in received) == ["after@example.com", "before@example.com"]
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()
        if not dovecot.running:
            dovecot.start()
    log = daemon.log()
    assert log.count("IMAP unavailable") == 1, log
    assert "IMAP reachable again" in log


def test_kill_9_in_the_middle_of_a_large_batch_then_restart(mailbox: ImapAccount, sink: SmtpSink,
                                                           tmp_path: Path) -> None:
    total = 300
    config, db_file = cli_config(mailbox, sink, tmp_path, imap={"batch_size": 25})
    for n in range(total):
        mailbox.append(raw_message(subject=f"Request {n}", sender=f"k{n}@example.com",
                                   message_id=f"<kill-{n}@example.com>"))
    first = DaemonProcess(config)
    try:
        wait_until(lambda: sqlite_count(db_file, "select count(*) from ticket") >= 60, 60, "60 tickets",
                   interval=0.02)
        first.kill()
    finally:
        first.ensure_stopped()
    at_kill = sqlite_count(db_file, "select count(*) from ticket")
    assert at_kill < total, "the daemon finished before it could be killed; make the batch larger"
    second = DaemonProcess(config)
    try:
        wait_until(lambda: sqlite_count(db_file, "select count(*) from processed_message") == total
                   and sqlite_count(db_file, "select count(*) from outbox where status != 'sent'") == 0,
                   120, "every message processed and acknowledged")
        assert second.terminate() == 0
    finally:
        second.ensure_stopped()
    assert sqlite_count(db_file, "select count(*) from ticket") == total
    assert sqlite_count(db_file, "select count(distinct requester) from ticket") == total
    assert sqlite_count(db_file, "select count(*) from outbox") == total
    acks = sink.messages
    references = [re.match(r"\[(TKT-\d+)\]", m.message()["Subject"]).group(1) for m in acks]
    assert len(set(references)) == total
    # The documented window: a message the relay accepted just before the kill, not yet marked sent.
    assert len(acks) - total <= 1, f"{len(acks) - total} acknowledgements sent twice"
    assert all(b"\\Seen" in flags for flags in mailbox.fetch_flags().values())


# --- loops -----------------------------------------------------------------------------------


def robot_answers(acks, mailbox: ImapAccount, auto_submitted: bool) -> int:
    """An autoresponder on the client's side that answers every message it gets."""
    for ack in acks:
        original = ack.message()
        reply = EmailMessage()
        reply["From"] = original["To"]
        reply["To"] = original["From"]
        reply["Subject"] = "Re: " + original["Subject"]
        reply["Message-ID"] = make_msgid(domain="robot.example.com")
        reply["In-Reply-To"] = original["Message-ID"]
        if auto_submitted:
            reply["Auto-Submitted"] = "auto-replied"
        reply.set_content("Thank you for your message. This mailbox is not monitored.\n")
        mailbox.append(reply.as_bytes())
    return len(acks)


@pytest.mark.parametrize(
    ("acknowledge_followups", "auto_submitted", "most_acks"),
    [
        (False, False, 1),  # a follow-up gets no acknowledgement: the loop ends at once
        (False, True, 1),
        (True, True, 1),  # automatic mail is never answered
        (True, False, 20),  # a naive robot and a chatty config: the daily rate limit ends it
    ],
)
def test_an_autoresponder_loop_stays_bounded(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path,
                                             clock: FrozenClock, acknowledge_followups: bool, auto_submitted: bool,
                                             most_acks: int) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'loop.sqlite3'}", tmp_path,
                            acknowledgement={"acknowledge_followups": acknowledge_followups})
    application = build_app(settings, clock)
    try:
        mailbox.append(raw_message(sender="robot@example.com", message_id="<loop-start@example.com>"))
        answered = 0
        for _ in range(40):  # 40 exchanges, ten simulated minutes apart: almost seven hours
            application.poller().cycle()
            answered += robot_answers(sink.messages[answered:], mailbox, auto_submitted)
            clock.advance(timedelta(minutes=10))
        assert len(sink.messages) == most_acks
        assert len(application.store.tickets()) == 1
    finally:
        application.close()


def test_a_changed_uidvalidity_after_a_migration_yields_no_second_ticket(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, clock: FrozenClock
) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'uv.sqlite3'}", tmp_path,
                            imap={"folder": "Support"})
    application = build_app(settings, clock)
    raws = [raw_message(sender=f"m{n}@example.com", message_id=f"<migrated-{n}@example.com>") for n in range(3)]
    try:
        for raw in raws:
            mailbox.append(raw, folder="Support")
        assert application.poller().cycle().outcomes == {"created": 3}
        application.poller().close()
        # A migration: the folder is rebuilt, with new UIDs, a new UIDVALIDITY and the flags lost.
        with mailbox.connect() as client:
            old_validity = client.folder_status("Support", ["UIDVALIDITY"])[b"UIDVALIDITY"]
            client.delete_folder("Support")
            client.create_folder("Support")
            for raw in raws:
                client.append("Support", raw)
            assert client.folder_status("Support", ["UIDVALIDITY"])[b"UIDVALIDITY"] != old_validity
        report = application.poller().cycle()
        assert report.outcomes == {"duplicate": 3}
        assert len(application.store.tickets()) == 3
        assert len(sink.wait_for(3)) == 3
        time.sleep(0.2)
        assert len(sink.messages) == 3
    finally:
        application.close()


def two_apps_with_queued_acks(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, db_url: str,
                              clock: FrozenClock, count: int, tag: str) -> list[App]:
    """Two daemons' worth of parts on one empty database, with ``count`` acknowledgements queued."""
    apps = [build_app(settings_for(mailbox, sink, db_url, tmp_path), clock) for _ in range(2)]
    empty_database(apps[0].store.engine)
    apps[0].store.upgrade_schema()
    for n in range(count):
        apps[0].processor.process(raw_message(sender=f"{tag}{n}@example.com", message_id=f"<{tag}-{n}@example.com>"),
                                  Source("ingest"), clock.now())
    return apps


def test_a_sender_whose_claim_ran_out_does_not_send_what_another_took(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    # A relay slow enough that one sender is still working through its claim when the lease
    # runs out: the rows go to a second sender, and the first must not send them as well.
    apps = two_apps_with_queued_acks(mailbox, sink, tmp_path, db_url, clock, 3, "lease")
    try:
        slow, other = apps[0].delivery(), apps[1].delivery()
        claimed_at = clock.now()
        held = apps[0].store.claim_due_outbox(claimed_at, 10, slow.lease, slow.owner)
        assert len(held) == 3
        clock.advance(slow.lease + timedelta(seconds=1))
        assert other.deliver_due().sent == 3
        with apps[0].sender().session() as session:
            report = slow.deliver_claimed(session, held, claimed_at)
        assert report.sent == 0
        time.sleep(0.3)
        assert len(sink.messages) == 3, f"{len(sink.messages) - 3} acknowledgements sent twice"
    finally:
        for a in apps:
            a.close()


def test_a_slow_sender_keeps_its_claim_by_renewing_it(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    apps = two_apps_with_queued_acks(mailbox, sink, tmp_path, db_url, clock, 3, "renew")
    try:
        slow, other = apps[0].delivery(), apps[1].delivery()
        claimed_at = clock.now()
        held = apps[0].store.claim_due_outbox(claimed_at, 10, slow.lease, slow.owner)
        taken_meanwhile: list[int] = []

        class SlowRelay:
            """Each message takes 0.6 of the lease; while the second goes out, the other sender looks."""

            def __init__(self, session) -> None:
                self.session, self.calls = session, 0

            def send(self, envelope):
                self.calls += 1
                clock.advance(slow.lease * 0.6)
                if self.calls == 2:  # 1.2 leases after the claim: only a renewal keeps the third ours
                    taken_meanwhile.append(other.deliver_due().sent)
                return self.session.send(envelope)

        with apps[0].sender().session() as session:
            report = slow.deliver_claimed(SlowRelay(session), held, claimed_at)
        assert report.sent == 3 and taken_meanwhile == [0]
        time.sleep(0.3)
        assert len(sink.messages) == 3
    finally:
        for a in apps:
            a.close()


def test_two_senders_on_one_database_send_each_acknowledgement_once(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    import threading

    apps = two_apps_with_queued_acks(mailbox, sink, tmp_path, db_url, clock, 60, "two")
    try:
        start = threading.Barrier(2)

        def deliver(app: App) -> None:
            start.wait()
            app.delivery().deliver_due()

        threads = [threading.Thread(target=deliver, args=(a,)) for a in apps]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        received = sink.wait_for(60)
        time.sleep(0.3)
        assert len(sink.messages) == 60, f"{len(sink.messages) - 60} acknowledgements sent twice"
        assert sorted(m.rcpt_tos[0] for m in received) == sorted(f"two{n}@example.com" for n in range(60))
    finally:
        for a in apps:
            a.close()


class TricklingServer:
    """Accepts connections and sends one byte every half second, forever: every single read
    succeeds, so a per-read timeout never fires."""

    def __init__(self) -> None:
        import socket
        import threading

        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:  # type: ignore[no-untyped-def]
        try:
            while not self._stop.is_set():
                conn.sendall(b"*")
                time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def test_a_trickling_imap_server_is_given_up_on_within_a_deadline(mailbox: ImapAccount, sink: SmtpSink,
                                                                  tmp_path: Path, clock: FrozenClock) -> None:
    server = TricklingServer()
    try:
        table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 't.sqlite3'}", tmp_path / "pw",
                             imap={"port": server.port, "connect_timeout_seconds": 1.0, "read_timeout_seconds": 1.0})
        application = build_app(settings_from_dict(table, "<test>"), clock)
        try:
            started = time.monotonic()
            report = application.poller().cycle()
            assert report.imap_error and "greeting" in report.imap_error
            assert time.monotonic() - started < 60  # bounded, where it used to hang forever
        finally:
            application.close()
    finally:
        server.close()


def test_a_command_that_never_ends_is_cut_by_the_watchdog(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path,
                                                          clock: FrozenClock) -> None:
    from ticketure_mail.errors import ImapError

    table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 'w.sqlite3'}", tmp_path / "pw",
                         imap={"read_timeout_seconds": 1.0})
    application = build_app(settings_from_dict(table, "<test>"), clock)
    inbox = application.inbox()
    try:
        inbox.connect()

        def endless(client):  # type: ignore[no-untyped-def]
            # Every read succeeds at once, so no per-read timeout fires: only a total deadline helps.
            while True:
                client.noop()

        started = time.monotonic()
        with pytest.raises(ImapError, match="endless"):
            inbox._run("endless", endless)
        assert time.monotonic() - started < 60
        assert not inbox.connected
    finally:
        inbox.close()
        application.close()
