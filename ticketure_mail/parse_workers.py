"""Parses fetched mail in child processes, beside the thread that stores and sends it.

Python runs one thread of a process at a time, and parsing is about a third of the work done
for each message: in the daemon's own process it takes turns with storing and sending, in a
child it runs on another core. A child is also a boundary the daemon's process lacks: a message
that hangs the parser or kills it is quarantined with the reason, and the parser restarted.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection

from . import child_process
from .errors import ParseError
from .model import ParsedMail

log = logging.getLogger(__name__)

ParseOutcome = ParsedMail | ParseError

# Messages handed to the children ahead of the one the caller waits for: enough to keep a
# child busy, few enough that memory stays flat whatever the size of the batch.
_AHEAD = 16
_AHEAD_BYTES = 16 * 1024 * 1024
_POLL_SECONDS = 0.25


class ParseWorkers:
    """``processes`` children that parse messages; results come back in the order given."""

    def __init__(self, processes: int, timeout_seconds: float, memory_limit_bytes: int = 0) -> None:
        if processes < 1:
            raise ValueError("at least one parser process")
        self.processes = processes
        self.timeout = timeout_seconds
        self.memory_limit = memory_limit_bytes
        self._children: list[_Child] = []

    def parse_all(self, raws: Sequence[bytes | None]) -> Iterator[ParseOutcome | None]:
        """The parsed mail (or the ParseError) for each message, in order; None for None.

        Messages are handed out a few ahead of the one yielded, so the children parse while
        the caller stores. Leaving the loop early (a stop, an error) drops the few in flight
        and restarts the children that held them: waiting for them could mean waiting out the
        parse timeout once per message, on a message that hangs the parser.
        """
        children = self._started()
        # (the child parsing it, or None with the outcome already known; the message's size)
        waiting: deque[tuple[_Child | None, ParseOutcome | None, int]] = deque()
        ahead_bytes = 0
        handed = 0
        try:
            for _ in range(len(raws)):
                while handed < len(raws) and (not waiting or (len(waiting) < _AHEAD * len(children)
                                                              and ahead_bytes < _AHEAD_BYTES)):
                    raw = raws[handed]
                    if not raw:  # None stays None; empty bytes (the children's stop signal) fail here
                        waiting.append((None, None if raw is None else ParseError("empty message"), 0))
                    else:
                        child = children[handed % len(children)]
                        child.submit(raw)
                        ahead_bytes += len(raw)
                        waiting.append((child, None, len(raw)))
                    handed += 1
                child, known, size = waiting.popleft()
                ahead_bytes -= size
                yield known if child is None else child.result(self.timeout)
        finally:
            for child in {child for child, _known, _size in waiting if child is not None}:
                child.restart()

    def start(self) -> None:
        """Start the children now rather than with the first batch (they take a moment to import)."""
        self._started()

    def close(self) -> None:
        for child in self._children:
            child.stop()
        self._children = []

    def _started(self) -> list[_Child]:
        if not self._children:
            self._children = [_Child(n, self.memory_limit) for n in range(self.processes)]
        return self._children


class _Child:
    """One parser process, restarted when it hangs or dies. Messages go to it from a thread of
    its own, so that the caller never blocks on a full socket while the child, in turn, waits
    for the caller to read its answers."""

    def __init__(self, number: int, memory_limit: int = 0) -> None:
        self.number = number
        self.memory_limit = memory_limit
        self._in_flight: deque[bytes] = deque()
        self._start()

    def _start(self) -> None:
        self.process, self._conn = child_process.start(f"{__name__}:serve", self.memory_limit)
        self._outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, args=(self._conn, self._outgoing),
                                        name=f"parser-{self.number}-feeder", daemon=True)
        self._feeder.start()

    @staticmethod
    def _feed(conn: Connection, outgoing: queue.SimpleQueue[bytes | None]) -> None:
        while True:
            raw = outgoing.get()
            try:
                conn.send_bytes(b"" if raw is None else raw)
            except OSError:
                return  # the child is gone; result() notices and restarts it
            if raw is None:
                return

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, raw: bytes) -> None:
        self._in_flight.append(raw)
        self._outgoing.put(raw)

    def result(self, timeout: float) -> ParseOutcome:
        """The outcome of the oldest message handed to this child."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self._conn.poll(_POLL_SECONDS):
                    if not self.alive:
                        failure = f"the parser process ended (exit code {self.process.returncode})"
                        break
                    if time.monotonic() >= deadline:
                        failure = f"parsing took longer than workers.parse_timeout_seconds ({timeout:g} s)"
                        break
                    continue
                outcome = self._conn.recv()
            except (OSError, EOFError) as exc:
                failure = f"the parser process ended ({type(exc).__name__})"
                break
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

    def restart(self) -> None:
        """Drop whatever this child holds and start a fresh one."""
        self._kill()
        self._in_flight.clear()
        self._start()

    def stop(self) -> None:
        self._outgoing.put(None)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._kill()

    def _kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait(timeout=5)
        self._outgoing.put(None)
        self._conn.close()


def serve(conn: Connection) -> None:
    """The child's loop: raw bytes in, ParsedMail or ParseError out, until empty bytes."""
    from .parsing import parse_mail  # here, not at the top: the daemon that starts parsers never loads the parser

    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not raw:
            return
        try:
            outcome: ParseOutcome = parse_mail(raw)
        except ParseError as exc:
            outcome = exc
        except BaseException as exc:  # MemoryError, RecursionError: this message, not the child
            outcome = ParseError(f"parser failed: {type(exc).__name__}")
        try:
            conn.send(outcome)
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception as exc:  # an outcome that cannot be pickled
            conn.send(ParseError(f"parser result could not be passed on: {type(exc).__name__}"))
