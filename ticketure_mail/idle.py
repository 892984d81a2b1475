"""Push: waits for new mail with IMAP IDLE on a connection of its own and wakes the poll cycle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config import ImapSettings
from .errors import ImapError
from .imap_inbox import ImapInbox

log = logging.getLogger(__name__)

# How long one wait on the socket lasts before the stop flag is looked at again.
_WAIT_SLICE_SECONDS = 1.0
_FIRST_RETRY_SECONDS = 1.0
_MAX_RETRY_SECONDS = 30.0


class IdleWatcher:
    """Keeps one IMAP connection in IDLE and calls ``wake("idle")`` when the server announces
    new mail. It never fetches: the poll cycle does that on its own connection (imapclient is
    not thread-safe, and a connection in IDLE can send no other command).

    It wakes the cycle too each time it (re)enters IDLE: a server's "new mail" that arrived in
    the same packet as its "+ idling" answer sits in imaplib's buffer where no select() sees
    it, and mail that arrived while the connection was down was announced to nobody.

    When the server offers no IDLE the thread logs that and ends; the poll timer then finds
    the mail, as it does for every server.
    """

    def __init__(
        self,
        inbox_factory: Callable[[], ImapInbox],
        wake: Callable[[str], None],
        settings: ImapSettings,
        stop: threading.Event | None = None,
    ) -> None:
        self._inbox_factory = inbox_factory
        self._wake = wake
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self._thread = threading.Thread(target=self._run, name="imap-idle", daemon=True)
        self.supported: bool | None = None  # None until the server was asked
        self.idling = threading.Event()  # set while the connection waits in IDLE; for tests

    @property
    def refresh_seconds(self) -> float:
        return self.settings.idle_refresh_minutes * 60

    @property
    def deadline_seconds(self) -> float:
        """How long leaving and re-entering IDLE may take before the connection counts as
        dead: imapclient's idle_done() can block past the socket timeout on a dropped network."""
        return self.settings.read_timeout_seconds

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        retry = _FIRST_RETRY_SECONDS
        lost_since: float | None = None
        while not self.stop_event.is_set():
            inbox = self._inbox_factory()
            try:
                inbox.connect()
                if not inbox.supports_idle():
                    self.supported = False
                    log.info("IMAP server %s offers no IDLE: new mail is found by polling every poll interval",
                             self.settings.host)
                    return
                self.supported = True
                if lost_since is not None:
                    log.warning("IDLE connection back after %.0f s", time.monotonic() - lost_since)
                    lost_since = None
                retry = _FIRST_RETRY_SECONDS
                self._watch(inbox)
            except Exception as exc:  # whatever it was, a watcher that gives up leaves only the timer
                self.idling.clear()
                if not isinstance(exc, ImapError):
                    log.exception("IDLE watcher failed on %s", self.settings.host)
                if lost_since is None:
                    lost_since = time.monotonic()
                    # Once per outage: the poll cycle logs its own view of an IMAP outage.
                    log.warning("IDLE connection lost (%s); reconnecting, meanwhile mail waits for the poll timer", exc)
                self.stop_event.wait(retry)
                retry = min(retry * 2, _MAX_RETRY_SECONDS)
            finally:
                in_idle = self.idling.is_set()
                self.idling.clear()
                self._leave(inbox, in_idle)

    def _watch(self, inbox: ImapInbox) -> None:
        """Wait in IDLE until stopped; raises ImapError when the connection fails."""
        self._enter(inbox)
        log.info("waiting for new mail with IDLE on %s/%s (renewed every %.0f s)",
                 self.settings.host, self.settings.folder, self.refresh_seconds)
        renew_at = time.monotonic() + self.refresh_seconds
        while not self.stop_event.is_set():
            if inbox.wait_idle(min(_WAIT_SLICE_SECONDS, max(0.0, renew_at - time.monotonic()))):
                log.debug("IDLE: the server announced new mail")
                self._wake("idle")
            if time.monotonic() >= renew_at:
                # Leaving IDLE needs an answer from the server: a connection dropped without a
                # goodbye (NAT, a firewall) is found here at the latest, and servers that end
                # IDLE after 30 minutes (RFC 2177) never get the chance.
                with self._deadline(inbox):
                    announced = inbox.end_idle()
                self.idling.clear()
                if announced:
                    self._wake("idle")
                self._enter(inbox)
                renew_at = time.monotonic() + self.refresh_seconds

    def _enter(self, inbox: ImapInbox) -> None:
        with self._deadline(inbox):
            inbox.start_idle()
        self.idling.set()
        self._wake("idle-start")

    def _leave(self, inbox: ImapInbox, in_idle: bool) -> None:
        """Leave IDLE and log out politely when the connection is still good; never wait long."""
        if not inbox.connected:
            return
        try:
            with self._deadline(inbox):
                if in_idle:
                    inbox.end_idle()
                inbox.close()
        except Exception:  # the connection is being thrown away: cut it, say nothing more on it
            inbox.abort()

    @contextmanager
    def _deadline(self, inbox: ImapInbox) -> Iterator[None]:
        """A watchdog: past the deadline the socket is shut from this other thread, so the
        blocked read in the watching thread fails instead of hanging."""
        timer = threading.Timer(self.deadline_seconds, inbox.abort)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
