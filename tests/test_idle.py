"""Push with IMAP IDLE against the real Dovecot: mail processed as soon as it arrives, a cut or
restarted connection survived, a server without IDLE polled; wake-ups never lost."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient, SocketTimeout
from servers import DovecotServer, ImapAccount, SmtpSink

from ticketure_mail.app import App, build_app
from ticketure_mail.config import settings_from_dict
from ticketure_mail.daemon import run_daemon
from ticketure_mail.idle import IdleWatcher
from ticketure_mail.imap_inbox import ImapInbox
from ticketure_mail.worker import Worker

from appfactory import config_table, settings_for, toml_text
from daemonproc import DaemonProcess, wait_until
from mailfactory import raw_message
from tcpproxy import TcpProxy

# Far beyond every wait below: mail that arrives in time came by IDLE, not by the timer.
SLOW_TIMER = {"poll_interval_seconds": 300}


def daemon_config(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, port: int | None = None) -> Path:
    imap = {"port": port} if port is not None else {}
    table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 'idle.sqlite3'}", tmp_path / "pw",
                         schedule=SLOW_TIMER, imap=imap)
    path = tmp_path / "config.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    return path


def idling(daemon: DaemonProcess, times: int = 1) -> None:
    wait_until(lambda: daemon.log().count("waiting for new mail with IDLE") >= times, 30, "the daemon to idle")
    time.sleep(0.5)  # past the wake-up that entering IDLE gives, so only the server can wake it now


@pytest.fixture
def cleanup() -> Iterator[list[DaemonProcess]]:
    daemons: list[DaemonProcess] = []
    yield daemons
    for daemon in daemons:
        daemon.ensure_stopped()


def test_mail_appended_while_the_daemon_idles_is_acknowledged_without_waiting_for_the_timer(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, cleanup: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(daemon_config(mailbox, sink, tmp_path))
    cleanup.append(daemon)
    idling(daemon)
    for n in range(3):
        mailbox.append(raw_message(subject=f"Urgent: till {n} is down", sender=f"shop{n}@example.com",
                                   message_id=f"<idle-{n}@example.com>"))
        [*_, ack] = sink.wait_for(n + 1, timeout=30)
        assert ack.rcpt_tos == [f"shop{n}@example.com"]
    assert daemon.terminate() == 0
    log = daemon.log()
    assert "created message-id=<idle-2@example.com>" in log
    assert "IDLE connection lost" not in log


def test_a_cut_idle_connection_is_replaced_and_mail_still_arrives(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, cleanup: list[DaemonProcess]
) -> None:
    proxy = TcpProxy(mailbox.host, mailbox.port)
    try:
        daemon = DaemonProcess(daemon_config(mailbox, sink, tmp_path, port=proxy.port))
        cleanup.append(daemon)
        idling(daemon)
        # The next bytes the server sends (the new-mail announcement) cut every connection,
        # and every new one too, until the network is back.
        proxy.cut_after(0)
        mailbox.append(raw_message(sender="during@example.com", message_id="<cut-during@example.com>"))
        wait_until(lambda: "IDLE connection lost" in daemon.log(), 30, "the cut to be noticed")
        assert sink.messages == []
        proxy.cut_after(None)
        # Back in IDLE on a new connection: the message announced to the dead one is processed,
        # and the next one is announced again.
        assert sink.wait_for(1, timeout=60)[0].rcpt_tos == ["during@example.com"]
        idling(daemon, times=2)
        mailbox.append(raw_message(sender="after@example.com", message_id="<cut-after@example.com>"))
        assert sink.wait_for(2, timeout=30)[1].rcpt_tos == ["after@example.com"]
        assert daemon.terminate() == 0
    finally:
        proxy.close()
    assert "IDLE connection back" in daemon.log()


def test_a_dovecot_restart_under_an_idling_daemon_loses_nothing(
    dovecot: DovecotServer, mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, cleanup: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(daemon_config(mailbox, sink, tmp_path))
    cleanup.append(daemon)
    try:
        idling(daemon)
        dovecot.stop()
        wait_until(lambda: "IDLE connection lost" in daemon.log(), 30, "the outage to be noticed")
        dovecot.start()
        # Mail that arrives while the daemon is still reconnecting was announced to nobody.
        mailbox.append(raw_message(sender="restart@example.com", message_id="<restart@example.com>"))
        assert sink.wait_for(1, timeout=90)[0].rcpt_tos == ["restart@example.com"]
        assert daemon.alive()
        assert daemon.terminate() == 0
    finally:
        if not dovecot.running:
            dovecot.start()
    assert "IDLE connection back" in daemon.log()


class _ClientWithoutIdle(IMAPClient):
    """A server that does not offer IDLE, as some hosted mailboxes do not."""

    def capabilities(self):  # type: ignore[no-untyped-def]
        return tuple(c for c in super().capabilities() if c != b"IDLE")


def test_a_server_without_idle_is_polled_by_the_timer(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'poll.sqlite3'}", tmp_path,
                            schedule={"poll_interval_seconds": 1})

    def client() -> IMAPClient:
        return _ClientWithoutIdle(mailbox.host, port=mailbox.port, ssl=False, timeout=SocketTimeout(5, 10))

    app = build_app(settings, imap_client=client)
    outcome: list[BaseException] = []

    def drive() -> None:
        try:
            wait_until(lambda: "offers no IDLE" in caplog.text, 30, "the fallback to be logged")
            mailbox.append(raw_message(sender="polled@example.com", message_id="<polled@example.com>"))
            sink.wait_for(1, timeout=30)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            app.stop.set()

    driver = threading.Thread(target=drive)
    try:
        with caplog.at_level(logging.INFO, logger="ticketure_mail"):
            driver.start()
            run_daemon(app)  # signal handlers need the main thread
        driver.join(30)
    finally:
        app.close()
    assert outcome == []
    assert sink.messages[0].rcpt_tos == ["polled@example.com"]
    assert "waiting for new mail with IDLE" not in caplog.text


def test_the_watcher_renews_idle_and_still_hears_new_mail(mailbox: ImapAccount, sink: SmtpSink,
                                                          tmp_path: Path) -> None:
    table = config_table(mailbox, sink, "sqlite://", tmp_path / "pw", imap={"idle_refresh_minutes": 0.02})
    settings = settings_from_dict(table, "<test>")
    wakes: list[str] = []
    watcher = IdleWatcher(lambda: ImapInbox(settings.imap, mailbox.password, read_only=True), wakes.append,
                          settings.imap)
    watcher.start()
    try:
        # Renewed every 1.2 s: each renewal leaves IDLE, is answered, and enters it again.
        wait_until(lambda: wakes.count("idle-start") >= 3, 30, "IDLE to be renewed twice")
        mailbox.append(raw_message(message_id="<renewed@example.com>"))
        wait_until(lambda: "idle" in wakes, 30, "the new mail to be announced")
    finally:
        watcher.stop(timeout=30)
    assert watcher.supported is True


def test_a_connection_dropped_without_a_goodbye_is_found_at_the_next_renewal(
    mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy(mailbox.host, mailbox.port)
    table = config_table(mailbox, sink, "sqlite://", tmp_path / "pw",
                         imap={"port": proxy.port, "idle_refresh_minutes": 0.02, "connect_timeout_seconds": 2.0,
                               "read_timeout_seconds": 2.0})
    settings = settings_from_dict(table, "<test>")
    wakes: list[str] = []
    watcher = IdleWatcher(lambda: ImapInbox(settings.imap, mailbox.password, read_only=True), wakes.append,
                          settings.imap)
    caplog.set_level(logging.WARNING, logger="ticketure_mail")
    watcher.start()
    try:
        assert watcher.idling.wait(30)
        # Nothing is closed, the server's answers just stop arriving: only the renewal, which
        # needs an answer, can tell. Without its deadline the watcher would wait forever.
        proxy.stall(True)
        wait_until(lambda: "IDLE connection lost" in caplog.text, 30, "the silent connection to be given up")
        entered = wakes.count("idle-start")
        proxy.stall(False)
        wait_until(lambda: wakes.count("idle-start") > entered, 60, "IDLE on a new connection")
        mailbox.append(raw_message(message_id="<after-stall@example.com>"))
        wait_until(lambda: "idle" in wakes, 30, "the new mail to be announced")
    finally:
        watcher.stop(timeout=30)
        proxy.close()


def test_a_wake_up_during_a_run_brings_exactly_one_more_run() -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            started.set()
            release.wait(30)

    worker = Worker("test", job)
    worker.start()
    try:
        worker.wake("first")
        assert started.wait(30)
        for reason in ("idle", "timer", "idle"):  # all while the first run is busy
            worker.wake(reason)
        release.set()
        assert worker.wait_idle(30)
        assert runs == [0, 1]
        worker.wake("later")
        assert worker.wait_idle(30)
        assert runs == [0, 1, 2]
    finally:
        assert worker.stop(30)


def test_acknowledgements_go_out_after_each_committed_batch(mailbox: ImapAccount, sink: SmtpSink,
                                                           tmp_path: Path) -> None:
    settings = settings_for(mailbox, sink, f"sqlite:///{tmp_path / 'b.sqlite3'}", tmp_path, imap={"batch_size": 2})
    app: App = build_app(settings)
    try:
        for n in range(5):
            mailbox.append(raw_message(sender=f"b{n}@example.com", message_id=f"<batch-{n}@example.com>"))
        poller = app.poller()
        sent_per_call: list[int] = []
        poller.send_now = lambda: sent_per_call.append(poller.delivery.deliver_due().sent)
        assert poller.cycle().outcomes == {"created": 5}
        assert sent_per_call == [2, 2, 1, 0]  # one sending per batch, then the end-of-cycle one
        assert len(sink.wait_for(5)) == 5
    finally:
        app.close()
