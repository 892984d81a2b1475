"""The long-running daemon: APScheduler drives the poll cycle; SIGTERM/SIGINT stop it cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from .app import App
from .poller import Poller

log = logging.getLogger(__name__)


def run_daemon(app: App) -> None:
    """Poll until a signal asks to stop; the message in hand is finished first."""
    poller = app.poller()
    interval = app.settings.schedule.poll_interval_seconds
    stop = app.stop
    previous = {sig: signal.signal(sig, _stop_on_signal(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}

    # One worker and one instance: the IMAP connection belongs to one thread at a time.
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": max(1, interval // 2)},
        timezone="UTC",
    )
    scheduler.add_listener(_report_job_problem, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    scheduler.add_job(
        _cycle, "interval", seconds=interval, args=[poller], id="poll", next_run_time=app.clock.now()
    )
    log.info("daemon started: polling %s/%s every %ds", app.settings.imap.host, app.settings.imap.folder, interval)
    scheduler.start()
    try:
        while not stop.wait(timeout=1.0):
            pass
        log.info("stop requested: finishing the message in hand")
    finally:
        scheduler.shutdown(wait=True)
        poller.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("daemon stopped")


def _cycle(poller: Poller) -> None:
    try:
        report = poller.cycle()
    except Exception:  # the scheduler would only log it; say which part failed and carry on
        log.exception("poll cycle failed")
        return
    if report.processed or report.delivery.sent or report.delivery.failed:
        log.info(
            "cycle: %d processed %s; sent %d, retrying %d, failed %d",
            report.processed, report.outcomes, report.delivery.sent, report.delivery.retrying, report.delivery.failed,
        )


def _stop_on_signal(stop: threading.Event):  # type: ignore[no-untyped-def]
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    return handler


def _report_job_problem(event: JobEvent) -> None:
    if event.code == EVENT_JOB_MAX_INSTANCES:
        log.warning("poll cycle still running at its next start; the start was skipped")
    elif event.code == EVENT_JOB_MISSED:
        log.warning("poll cycle start missed (the process was busy or suspended)")
    else:
        log.error("poll cycle raised: %r", getattr(event, "exception", None))
