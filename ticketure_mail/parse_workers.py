"""Parses fetched mail in child processes, beside the thread that stores and sends it.

Python runs one thread of a process at a time, and parsing is about a third of the work done
for each message: in the daemon's own process it takes turns with storing and sending, in a
child it runs on another core. A child is also a boundary the daemon's process lacks: a message
that hangs the parser or kills it is quarantined with the reason, and the parser restarted.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.context import SpawnProcess
from typing import Any

from .errors import ParseError
from .model import ParsedMail
from .parsing import parse_mail

log = logging.getLogger(__name__)

ParseOutcome = ParsedMail | ParseError

# Messages handed to the children ahead of the one the caller waits for: enough to keep a
# child busy, few enough that memory stays flat whatever the size of the batch.
_AHEAD = 16
_AHEAD_BYTES = 16 * 1024 * 1024
_POLL_SECONDS = 0.25


class ParseWorkers:
    """``processes`` children that parse messages; results come back in the order given."""

    def __init__(self, processes: int, timeout_seconds: float) -> None:
        if processes < 1:
            raise ValueError("at least one parser process")
        self.processes = processes
        self.timeout = timeout_seconds
        self._children: list[_Child] = []

    def parse_all(self, raws: Sequence[bytes | None]) -> Iterator[ParseOutcome | None]:
        """The parsed mail (or the ParseError) for each message, in order; None for None.

        Messages are handed out a few ahead of the one yielded, so the children parse while
        the caller stores. Leaving the loop early waits for the few in flight and drops them.
        """
        children = self._started()
        waiting: deque[tuple[_Child | None, int]] = deque()
        ahead_bytes = 0
        handed = 0
        try:
            for _ in range(len(raws)):
                while handed < len(raws) and (not waiting or (len(waiting) < _AHEAD * len(children)
                                                              and ahead_bytes < _AHEAD_BYTES)):
                    raw = raws[handed]
                    child = None if raw is None else children[handed % len(children)]
                    if child is not None and raw is not None:
                        child.submit(raw)
                        ahead_bytes += len(raw)
                    waiting.append((child, 0 if raw is None else len(raw)))
                    handed += 1
                child, size = waiting.popleft()
                ahead_bytes -= size
                yield None if child is None else child.result(self.timeout)
        finally:
            for child, _size in waiting:
                if child is not None:
                    child.result(self.timeout)

    def start(self) -> None:
        """Start the children now rather than with the first batch (they take a moment to import)."""
        self._started()

    def close(self) -> None:
        for child in self._children:
            child.stop()
        self._children = []

    def _started(self) -> list[_Child]:
        if not self._children:
            self._children = [_Child(n) for n in range(self.processes)]
        return self._children


class _Child:
    """One parser process with its two queues, restarted when it hangs or dies."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._in_flight: deque[bytes] = deque()
        self._start()

    def _start(self) -> None:
        self.tasks: Any = self._context.Queue()
        self.results: Any = self._context.Queue()
        self.process: SpawnProcess = self._context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(self.tasks, self.results), name=f"ticketure-parser-{self.number}", daemon=True
        )
        self.process.start()

    def submit(self, raw: bytes) -> None:
        self._in_flight.append(raw)
        self.tasks.put(raw)

    def result(self, timeout: float) -> ParseOutcome:
        """The outcome of the oldest message handed to this child."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                outcome = self.results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self.process.is_alive():
                    failure = f"the parser process ended (exit code {self.process.exitcode})"
                    break
                if time.monotonic() >= deadline:
                    failure = f"parsing took longer than workers.parse_timeout_seconds ({timeout:g} s)"
                    break
                continue
            except Exception as exc:  # a child killed mid-answer leaves a torn message
                failure = f"the parser's answer was unreadable ({type(exc).__name__})"
                break
            self._in_flight.popleft()
            return outcome if isinstance(outcome, (ParsedMail, ParseError)) else ParseError("parser answered nonsense")
        # The oldest message was the one being parsed: it is the one that failed. The others
        # handed to this child go to its successor.
        self._in_flight.popleft()
        rest = list(self._in_flight)
        log.warning("parser process %d restarted: %s", self.number, failure)
        self._kill()
        self._in_flight.clear()
        self._start()
        for raw in rest:
            self.submit(raw)
        return ParseError(failure)

    def stop(self) -> None:
        try:
            self.tasks.put(None)
            self.process.join(timeout=5)
        finally:
            self._kill()

    def _kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()  # what is left in a queue of a dead child is never read
            q.close()


def _serve(tasks: Any, results: Any) -> None:
    """The child's loop: bytes in, ParsedMail or ParseError out, until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the daemon stops us
    while True:
        raw = tasks.get()
        if raw is None:
            return
        try:
            outcome: ParseOutcome = parse_mail(raw)
        except ParseError as exc:
            outcome = exc
        except BaseException as exc:  # MemoryError, RecursionError: this message, not the child
            outcome = ParseError(f"parser failed: {type(exc).__name__}")
        try:
            results.put(outcome)
        except Exception as exc:  # an outcome that cannot be pickled
            results.put(ParseError(f"parser result could not be passed on: {type(exc).__name__}"))
