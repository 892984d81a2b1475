"""The long-running daemon: IMAP IDLE and the APScheduler timer wake the poll cycle, the scheduler drives the
deadline watcher; SIGTERM/SIGINT stop it cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .app import App
from .delivery import OutboxDelivery
from .poller import Poller
from .watcher import DeadlineWatcher
from .worker import Worker

log = logging.getLogger(__name__)


def run_daemon(app: App) -> None:
    """Poll until a signal asks to stop; the message in hand is finished first."""
    poller = app.poller()
    if poller.parsers is not None:
        poller.parsers.start()  # while the first connection to the mailbox is made
    interval = app.settings.schedule.poll_interval_seconds
    stop = app.stop
    previous = {sig: signal.signal(sig, _stop_on_signal(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}

    # The cycle and the sending run on threads of their own, woken by the timer, by IDLE and by
    # each committed batch. The scheduler only keeps time: a wake-up is instant, so its
    # max_instances=1 never drops one that arrives during a long cycle (worker.py).
    sender = Worker("sender", lambda: _send(poller.delivery))
    poller.send_now = lambda: sender.wake("commit")
    cycles = Worker("poll", lambda: _cycle(poller))
    idle = app.idle_watcher(cycles.wake) if app.settings.imap.idle else None

    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": max(1, interval // 2)},
        timezone="UTC",
    )
    scheduler.add_listener(_report_job_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    # The timer stays as the safety net: for servers without IDLE, and for an IDLE connection
    # that died without anyone noticing yet.
    scheduler.add_job(cycles.wake, "interval", seconds=interval, args=["timer"], id="poll")
    # The scheduler starts after the first poll cycle (below), so a staff reply read at start-up
    # stops its clock before any alert is raised; a run that starts late still catches up, so a
    # late one is never skipped.
    scheduler.add_job(
        _watch, "interval", seconds=app.settings.watcher.interval_seconds, args=[app.watcher(), poller.delivery],
        id="watch", next_run_time=app.clock.now() + timedelta(seconds=1), misfire_grace_time=None,
    )
    log.info("daemon started: polling %s/%s every %ds", app.settings.imap.host, app.settings.imap.folder, interval)
    sender.start()
    cycles.start()
    cycles.wake("start")
    if idle is not None:
        idle.start()
    try:
        while cycles.runs == 0 and not stop.wait(timeout=0.2):
            pass
        if not stop.is_set():
            scheduler.start()
        while not stop.wait(timeout=1.0):
            pass
        log.info("stop requested: finishing the message in hand")
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)
        if idle is not None:
            # Its thread may sit in a connect or a renewal for a while; nothing of ours waits on it.
            idle.stop(timeout=10)
        cycles.stop()
        sender.stop()
        poller.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("daemon stopped")


def _cycle(poller: Poller) -> None:
    try:
        report = poller.cycle()
    except Exception:  # the worker would only log it; say which part failed and carry on
        log.exception("poll cycle failed")
        return
    if report.processed or report.delivery.sent or report.delivery.failed:
        log.info(
            "cycle: %d processed (%s); sent %d, retrying %d, failed %d",
            report.processed, report.outcome_counts() or "none", report.delivery.sent, report.delivery.retrying,
            report.delivery.failed,
        )


def _send(delivery: OutboxDelivery) -> None:
    report = delivery.deliver_due()
    if report.sent or report.retrying or report.failed:
        log.info("outbox: sent %d, retrying %d, failed %d", report.sent, report.retrying, report.failed)


def _watch(watcher: DeadlineWatcher, delivery: OutboxDelivery) -> None:
    try:
        report = watcher.run()
        if report.raised:
            sent = delivery.deliver_due()
            log.info("deadline alerts: %d due soon, %d breached; sent %d", report.due_soon, report.breached, sent.sent)
    except Exception:  # the scheduler would only log it; say which job failed and carry on
        log.exception("deadline watcher failed")


def _stop_on_signal(stop: threading.Event):  # type: ignore[no-untyped-def]
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    return handler


def _report_job_problem(event: JobEvent) -> None:
    job = "poll cycle" if event.job_id == "poll" else "deadline watcher"
    if event.code == EVENT_JOB_MAX_INSTANCES:
        log.warning("%s still running at its next start; the start was skipped", job)
    elif event.code == EVENT_JOB_MISSED:
        log.warning("%s start missed (the process was busy or suspended)", job)
    else:
        log.error("%s raised: %r", job, getattr(event, "exception", None))
