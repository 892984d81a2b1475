"""A thread that runs one job whenever it is woken; wake-ups during a run are kept, never skipped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    """Runs ``job`` on its own thread, one run at a time.

    ``wake()`` never blocks and is never lost: a wake-up that arrives while the job runs
    brings exactly one more run right after it (any number of them coalesce into that one).
    This is what APScheduler's max_instances=1 does not give: it drops a start that finds the
    job still running, so mail announced during a long cycle would wait for the next tick.
    """

    def __init__(self, name: str, job: Callable[[], None]) -> None:
        self.name = name
        self._job = job
        self._condition = threading.Condition()
        self._pending: set[str] = set()
        self._stopping = False
        self._busy = False
        self._runs = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, reason: str) -> None:
        """Ask for a run as soon as the current one (if any) is over."""
        with self._condition:
            self._pending.add(reason)
            self._condition.notify_all()

    def stop(self, timeout: float | None = None) -> bool:
        """Let the run in hand finish, then end the thread; False if it did not end in time."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def runs(self) -> int:
        """How many runs have finished; for tests and diagnostics."""
        with self._condition:
            return self._runs

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is pending; True if that happened within ``timeout`` seconds."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _loop(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                reasons, self._pending = self._pending, set()
                self._busy = True
            try:
                log.debug("%s: run for %s", self.name, ", ".join(sorted(reasons)))
                self._job()
            except Exception:  # the job reports its own faults; this keeps the thread alive
                log.exception("%s failed", self.name)
            finally:
                with self._condition:
                    self._busy = False
                    self._runs += 1
                    self._condition.notify_all()
