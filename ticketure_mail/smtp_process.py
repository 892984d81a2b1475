"""Runs the SMTP conversation in a child process; the daemon's sender thread claims and records.

Every reply from the relay wakes the thread waiting for it, and in the daemon's process that
thread must then wait for Python's interpreter lock behind the thread storing mail: several
times per message, each wait up to the interpreter's switch interval. A backlog was sent at a
fraction of the rate the relay takes. In a child process the conversation keeps its own pace.

The child holds an ordinary SmtpSession (smtp_sender.py) and answers for each envelope what
that session answers, so every rule about replies, retries and lost connections is the same.
Envelopes go one at a time and the parent records each reply before the next goes out: a
crash still repeats at most the one message in flight.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from .config import SmtpSettings
from .smtp_sender import Envelope, SendResult, SmtpSender, SmtpUnavailable

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.25


class ProcessSender:
    """A Sender (delivery.py) whose sessions each run in a child process of their own. Children
    start on first use and are kept for the next session."""

    def __init__(self, settings: SmtpSettings, password: str) -> None:
        self.settings = settings
        self._password = password
        self._lock = threading.Lock()
        self._idle: list[_Child] = []

    def session(self) -> ProcessSession:
        return ProcessSession(self)

    def check(self) -> str:
        """Connect once, for check-config; in this process, as nothing is sent."""
        return SmtpSender(self.settings, self._password).check()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive:
                    return child
        return _Child(self.settings, self._password)

    def _give_back(self, child: _Child) -> None:
        if child.alive:
            with self._lock:
                self._idle.append(child)


class _Child:
    """One sending process and the pipe to it."""

    def __init__(self, settings: SmtpSettings, password: str) -> None:
        self.settings = settings
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, settings, password),
                                        name="ticketure-sender", daemon=True)
        self._process.start()
        child_end.close()

    @property
    def alive(self) -> bool:
        return not self._conn.closed and self._process.is_alive()

    def ask(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        """Send one request and wait for the answer; SmtpUnavailable, and the child stopped, if it
        is gone or silent for longer than any SMTP step may take."""
        # Connecting (with TLS and login) may take two timeouts, the message itself one more.
        deadline = time.monotonic() + self.settings.timeout_seconds * 4 + 10
        try:
            self._conn.send(request)
            while not self._conn.poll(_POLL_SECONDS):
                if not self._process.is_alive():
                    raise SmtpUnavailable(f"the sending process ended (exit code {self._process.exitcode})")
                if time.monotonic() > deadline:
                    raise SmtpUnavailable("the sending process stopped answering")
            answer: tuple[Any, ...] = self._conn.recv()
            return answer
        except (OSError, EOFError) as exc:
            self.stop(wait=0)
            raise SmtpUnavailable(f"the sending process ended ({type(exc).__name__})") from exc
        except SmtpUnavailable:
            log.warning("sending process stopped; a new one starts with the next session")
            self.stop(wait=0)
            raise

    def stop(self, wait: float = 5.0) -> None:
        if not self._conn.closed:
            try:
                self._conn.send(None)
            except OSError:
                pass
        self._process.join(timeout=wait)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._conn.close()


class ProcessSession:
    """One SMTP session in a child: the connection is kept until the session ends."""

    def __init__(self, sender: ProcessSender) -> None:
        self._sender = sender
        self._child: _Child | None = None

    def __enter__(self) -> ProcessSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.ask(("end",))
        except SmtpUnavailable:
            return  # a child that is gone has no session left to end
        self._sender._give_back(child)

    def send(self, envelope: Envelope) -> SendResult:
        if self._child is None:
            self._child = self._sender._take()
        kind, value = self._child.ask(("send", envelope))
        if kind == "unavailable":
            raise SmtpUnavailable(value)
        assert isinstance(value, SendResult)
        return value


def _serve(conn: Connection, settings: SmtpSettings, password: str) -> None:
    """The child's loop: one request, one answer, until None or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the daemon stops us
    sender = SmtpSender(settings, password)
    session = None
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if request is None:
                return
            if request[0] == "end":
                if session is not None:
                    session.close()
                    session = None
                conn.send(("ended", None))
                continue
            session = session or sender.session()
            try:
                conn.send(("sent", session.send(request[1])))
            except SmtpUnavailable as exc:
                conn.send(("unavailable", str(exc)))
            except Exception as exc:  # a fault of ours must not end the child with the row unanswered
                conn.send(("unavailable", f"sending failed: {type(exc).__name__}: {exc}"[:500]))
    finally:
        if session is not None:
            session.close()
