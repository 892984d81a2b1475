"""The deadline watcher: which alerts are due (a table), then on real servers with a frozen clock:
due soon, breached, no repeat after a restart, catch-up after downtime, and the staff reply
that stops the clock."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from servers import ImapAccount, SmtpSink
from sqlmodel import Session, select

from dbreset import empty_database
from ticketure_mail.app import App, build_app
from ticketure_mail.cli import main
from ticketure_mail.clock import FrozenClock, SystemClock
from ticketure_mail.config import Settings
from ticketure_mail.model import Priority
from ticketure_mail.store import Store
from ticketure_mail.tables import AlertRow
from ticketure_mail.watcher import DueAlert, WatchedTicket, alerts_due

from appfactory import config_table, settings_for, toml_text
from mailfactory import raw_message

# --- which alerts are due, as a table ------------------------------------------------------------

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
LEADS_TABLE = {Priority.URGENT: timedelta(minutes=5), Priority.HIGH: timedelta(minutes=15),
               Priority.NORMAL: timedelta(hours=4), Priority.LOW: timedelta(0)}


def watched(priority: Priority = Priority.NORMAL, due: datetime = T0, **kw: object) -> WatchedTicket:
    return WatchedTicket(1, "TKT-000001", priority, due, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "ticket", "raised", "now", "expected"),
    [
        ("well before", watched(), set(), T0 - timedelta(hours=5), None),
        ("lead starts", watched(), set(), T0 - timedelta(hours=4), "due_soon"),
        ("inside the lead", watched(), set(), T0 - timedelta(hours=1), "due_soon"),
        ("due soon already raised", watched(), {(1, "due_soon", T0)}, T0 - timedelta(hours=1), None),
        ("at the deadline", watched(), {(1, "due_soon", T0)}, T0, "breached"),
        ("breached already raised", watched(), {(1, "due_soon", T0), (1, "breached", T0)}, T0 + timedelta(days=1),
         None),
        # The daemon was down through the whole lead and past the deadline: only "breached".
        ("catch-up after downtime", watched(), set(), T0 + timedelta(hours=6), "breached"),
        # A moved deadline (triage, escalation) re-arms both stages.
        ("moved deadline", watched(due=T0 + timedelta(days=2)), {(1, "due_soon", T0), (1, "breached", T0)},
         T0 + timedelta(days=2) - timedelta(hours=1), "due_soon"),
        ("priority 1 lead", watched(Priority.URGENT), set(), T0 - timedelta(minutes=5), "due_soon"),
        ("priority 1 before its lead", watched(Priority.URGENT), set(), T0 - timedelta(minutes=6), None),
        # A zero lead turns the due-soon alert off, not the breach.
        ("zero lead", watched(Priority.LOW), set(), T0 - timedelta(seconds=1), None),
        ("zero lead, breached", watched(Priority.LOW), set(), T0, "breached"),
        ("answered", watched(first_response_at=T0 - timedelta(hours=8)), set(), T0 + timedelta(hours=1), None),
        ("closed", watched(status="closed"), set(), T0 + timedelta(hours=1), None),
    ],
)
def test_alerts_due(case: str, ticket: WatchedTicket, raised: set, now: datetime, expected: str | None) -> None:
    due = alerts_due([ticket], raised, now, LEADS_TABLE)
    assert due == ([DueAlert(1, expected, ticket.due_at)] if expected else []), case  # type: ignore[arg-type]


# --- on the real servers ----------------------------------------------------------------------------

ARRIVAL = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # Thursday; a standard request is due Friday 15:00
DUE = ARRIVAL + timedelta(hours=24)
LEADS = "leads@ticketure.test"
STAFF = "agent@staff.example"


@pytest.fixture
def settings(mailbox: ImapAccount, sink: SmtpSink, db_url: str, tmp_path: Path) -> Settings:
    store = Store.from_url(db_url, "TKT")
    # PostgreSQL is shared by the session: every test starts from empty tables.
    empty_database(store.engine)
    store.close()
    return settings_for(mailbox, sink, db_url, tmp_path, watcher={"alert_address": LEADS},
                        staff={"domains": ["staff.example"]})


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(ARRIVAL + timedelta(seconds=5))


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> Iterator[App]:
    application = build_app(settings, clock)
    yield application
    application.close()


def alerts(sink: SmtpSink) -> list[str]:
    return [m.message()["Subject"] for m in sink.messages if m.rcpt_tos == [LEADS]]


def watch_and_send(app: App) -> tuple[int, int]:
    report = app.watcher().run()
    app.delivery().deliver_due()
    return report.due_soon, report.breached


def test_due_soon_then_breached_once_each_and_never_again_after_a_restart(
    app: App, settings: Settings, clock: FrozenClock, mailbox: ImapAccount, sink: SmtpSink
) -> None:
    mailbox.append(raw_message(subject="Printer jammed", message_id="<w1@example.com>"), internal_date=ARRIVAL)
    assert app.poller().cycle().outcomes == {"created": 1}
    assert watch_and_send(app) == (0, 0)

    clock.set(DUE - timedelta(hours=3))  # priority 3: due soon from 4 hours before
    assert watch_and_send(app) == (1, 0)
    assert watch_and_send(app) == (0, 0)
    [soon] = alerts(sink)
    assert soon.startswith("[TKT-000001] P3 due Fri 15:00 GMT: Printer jammed")

    clock.set(DUE)
    assert watch_and_send(app) == (0, 1)
    [_, missed] = alerts(sink)
    assert missed.startswith("[TKT-000001] P3 deadline missed Fri 15:00 GMT")
    message = [m for m in sink.messages if m.rcpt_tos == [LEADS]][-1].message()
    assert message["Auto-Submitted"] == "auto-generated" and message["Reply-To"] == LEADS
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert "no first response" in body and "tickets respond TKT-000001" in body

    # A restart: a new process, the same database.
    app.close()
    later = FrozenClock(DUE + timedelta(hours=2))
    restarted = build_app(settings, later)
    try:
        assert watch_and_send(restarted) == (0, 0)
        with Session(restarted.store.engine) as s:
            assert sorted(a.stage for a in s.exec(select(AlertRow))) == ["breached", "due_soon"]
        assert len(alerts(sink)) == 2
        shown = [(m.kind, m.direction) for m, _ in restarted.store.ticket_messages(1)]
        assert shown.count(("alert", "outbound")) == 2
    finally:
        restarted.close()


def test_an_alert_that_fell_due_while_the_daemon_was_down_is_sent_by_the_next_poll(
    settings: Settings, mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml_text(config_table(
        mailbox, sink, settings.database.url, tmp_path / "pw",
        watcher={"alert_address": LEADS}, staff={"domains": ["staff.example"]},
    )), encoding="utf-8")
    mailbox.append(raw_message(subject="Checkout rule", message_id="<w2@example.com>"), internal_date=ARRIVAL)
    assert main(["--config", str(config), "poll", "--once"], clock=FrozenClock(ARRIVAL)) == 0
    assert "deadline alerts" not in capsys.readouterr().out
    # Down from Thursday until Saturday: the due-soon window and the deadline both passed unwatched.
    assert main(["--config", str(config), "poll", "--once"], clock=FrozenClock(DUE + timedelta(days=1))) == 0
    assert "deadline alerts: 0 due soon, 1 breached; sent 1" in capsys.readouterr().out
    [missed] = alerts(sink)
    assert "deadline missed" in missed
    assert main(["--config", str(config), "poll", "--once"], clock=FrozenClock(DUE + timedelta(days=1, hours=1))) == 0
    assert len(alerts(sink)) == 1


def test_a_staff_reply_records_the_first_response_and_stops_the_clock(
    app: App, clock: FrozenClock, mailbox: ImapAccount, sink: SmtpSink
) -> None:
    mailbox.append(raw_message(subject="Kibana report empty", sender="Di <di@example.com>",
                               message_id="<w3@example.com>"), internal_date=ARRIVAL)
    other = raw_message(subject="Cart rule question", sender="ed@example.com", message_id="<w4@example.com>")
    mailbox.append(other, internal_date=ARRIVAL)
    assert app.poller().cycle().outcomes == {"created": 2}
    assert len(sink.messages) == 2  # the two acknowledgements

    # One answer by the thread's headers, one by the reference in the subject only.
    replied = ARRIVAL + timedelta(hours=2)
    mailbox.append(raw_message(subject="Re: Kibana report empty", sender=f"Agent <{STAFF}>", to="di@example.com",
                               message_id="<w3-answer@staff.example>", headers={"In-Reply-To": "<w3@example.com>"}),
                   internal_date=replied)
    mailbox.append(raw_message(subject="[TKT-000002] your cart rule", sender=f"Agent <{STAFF}>",
                               message_id="<w4-answer@staff.example>"), internal_date=replied)
    clock.set(replied + timedelta(seconds=5))
    report = app.poller().cycle()
    assert report.outcomes == {"threaded": 2}
    assert len(sink.messages) == 2  # staff replies get no acknowledgement
    for ticket in app.store.tickets():
        assert ticket.first_response_at == replied and ticket.first_response_by == STAFF
        kinds = [m.kind for m, _ in app.store.ticket_messages(ticket.id)]
        assert "response" in kinds

    # A later staff reply keeps the first response as it was.
    mailbox.append(raw_message(subject="Re: Kibana report empty", sender=STAFF, message_id="<w3-again@staff.example>",
                               headers={"In-Reply-To": "<w3@example.com>"}), internal_date=replied + timedelta(hours=1))
    app.poller().cycle()
    assert app.store.ticket("TKT-000001").first_response_at == replied  # type: ignore[union-attr]

    clock.set(DUE + timedelta(days=2))
    assert watch_and_send(app) == (0, 0)
    assert alerts(sink) == []
    assert app.store.find_tickets(overdue_at=clock.now()) == []


def test_closed_and_answered_tickets_get_no_alert_but_the_others_do(
    app: App, clock: FrozenClock, mailbox: ImapAccount, sink: SmtpSink
) -> None:
    for n in (1, 2, 3):
        mailbox.append(raw_message(subject=f"Request {n}", sender=f"c{n}@example.com",
                                   message_id=f"<w5-{n}@example.com>"), internal_date=ARRIVAL)
    assert app.poller().cycle().outcomes == {"created": 3}
    from ticketure_mail.triage import close, record_response

    close(app.store, "TKT-000001", "lead", clock.now())
    record_response(app.store, "TKT-000002", "lead", clock.now(), clock.now())
    clock.set(DUE + timedelta(minutes=1))
    assert watch_and_send(app) == (0, 1)
    [missed] = alerts(sink)
    assert missed.startswith("[TKT-000003]")


def test_without_an_alert_address_alerts_are_logged_once(
    mailbox: ImapAccount, sink: SmtpSink, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = settings_for(mailbox, sink, settings.database.url, tmp_path)
    clock = FrozenClock(ARRIVAL)
    application = build_app(quiet, clock)
    try:
        mailbox.append(raw_message(message_id="<w6@example.com>"), internal_date=ARRIVAL)
        application.poller().cycle()
        clock.set(DUE)
        with caplog.at_level("WARNING", logger="ticketure_mail.watcher"):
            assert watch_and_send(application) == (0, 1)
            assert watch_and_send(application) == (0, 0)
        assert [r.getMessage() for r in caplog.records if "deadline breached" in r.getMessage()] == [
            f"deadline breached ticket=TKT-000001 priority=3 due={DUE.isoformat()} "
            "alert=logged only (watcher.alert_address is empty)"
        ]
        assert alerts(sink) == []
    finally:
        application.close()


def test_the_daemon_runs_the_watcher_on_its_schedule(
    settings: Settings, mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text(toml_text(config_table(
        mailbox, sink, settings.database.url, tmp_path / "pw",
        schedule={"poll_interval_seconds": 1}, watcher={"alert_address": LEADS, "interval_seconds": 1},
    )), encoding="utf-8")
    # A request that arrived two days ago (real time: the daemon runs on the system clock).
    old = SystemClock().now() - timedelta(days=2)
    mailbox.append(raw_message(subject="Forgotten request", message_id="<w7@example.com>"), internal_date=old)
    process = subprocess.Popen([sys.executable, "-m", "ticketure_mail", "--config", str(config), "run"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        received = sink.wait_for(2, timeout=30)  # the acknowledgement, then the breach alert
        assert sorted(m.rcpt_tos[0] for m in received) == sorted([LEADS, "client@example.com"])
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "deadline breached ticket=TKT-000001" in log and "daemon stopped" in log
    assert len(alerts(sink)) == 1


def test_a_backlog_of_due_tickets_is_read_a_page_at_a_time(
    app: App, clock: FrozenClock, mailbox: ImapAccount, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ticketure_mail.watcher as watcher_module

    monkeypatch.setattr(watcher_module, "PAGE_SIZE", 2)
    for n in range(5):
        mailbox.append(raw_message(subject=f"Backlog {n}", sender=f"b{n}@example.com",
                                   message_id=f"<page-{n}@example.com>"), internal_date=ARRIVAL)
    assert app.poller().cycle().outcomes == {"created": 5}
    clock.set(DUE - timedelta(hours=3))
    assert watch_and_send(app) == (5, 0)
    clock.set(DUE)
    assert watch_and_send(app) == (0, 5)
    assert watch_and_send(app) == (0, 0)
