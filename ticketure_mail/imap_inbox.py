"""The support mailbox over IMAP: lists new mail, fetches it unread, marks or moves it when done."""

from __future__ import annotations

import imaplib
import logging
import selectors
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import SocketTimeout

from .clock import as_utc
from .config import ImapSettings
from .errors import ImapError
from .tls import tls_context

log = logging.getLogger(__name__)
T = TypeVar("T")
# Builds the (unconnected, logged-out) imapclient object; tests replace it, e.g. with a client
# of a server that lacks IDLE.
ImapClientFactory = Callable[[], IMAPClient]

# imapclient logs the whole protocol, bodies included, at DEBUG: never let that reach a log file.
logging.getLogger("imapclient").setLevel(logging.INFO)

# Errors that mean "this connection is no good": reconnect and try again later.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    socket.timeout,
    ssl.SSLError,
    imaplib.IMAP4.abort,
    imaplib.IMAP4.error,
    IMAPClientError,
    EOFError,
)


@dataclass(frozen=True)
class FetchedMessage:
    """One message as the server holds it. ``raw`` is None when it is over the size limit."""

    uid: int
    size: int
    internal_date: datetime | None
    raw: bytes | None


class ImapInbox:
    """One logged-in connection to one folder. Not thread-safe: one thread owns an instance."""

    def __init__(
        self,
        settings: ImapSettings,
        password: str,
        client_factory: ImapClientFactory | None = None,
        read_only: bool = False,
    ) -> None:
        self.settings = settings
        self._password = password
        self._client_factory = client_factory or self._new_client
        self._client: IMAPClient | None = None
        # A watching connection selects read-only (EXAMINE): it can never change the mailbox.
        self._read_only = read_only
        self.uidvalidity: int = 0

    @property
    def folder(self) -> str:
        return self.settings.folder

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _new_client(self) -> IMAPClient:
        s = self.settings
        timeout = SocketTimeout(connect=s.connect_timeout_seconds, read=s.read_timeout_seconds)
        context = tls_context(s.verify_certificate, s.ca_file)
        client = IMAPClient(s.host, port=s.port, ssl=s.tls == "ssl", ssl_context=context, timeout=timeout)
        if s.tls == "starttls":
            # Fails loudly when the server offers no STARTTLS: never fall back to plain text.
            client.starttls(context)
        return client

    def connect(self) -> None:
        """Connect, log in and select the folder; raises ImapError naming what failed."""
        self.close()
        client = self._open_with_deadline()
        self._client = client
        try:
            with self._watchdog(self._command_deadline()):
                client.normalise_times = False  # aware datetimes, not the machine's local time
                self._log_in(client)
                status = client.select_folder(self.settings.folder, readonly=self._read_only)
                validity = status.get(b"UIDVALIDITY")
                if validity is None:
                    validity = client.folder_status(self.settings.folder, ["UIDVALIDITY"])[b"UIDVALIDITY"]
                self.uidvalidity = int(validity)
        except CONNECTION_ERRORS as exc:
            self._client = None
            _shutdown(client)
            raise ImapError(f"IMAP login or select of {self.settings.folder!r} failed: {_describe(exc)}") from exc

    def _open_with_deadline(self) -> IMAPClient:
        """The connection and its greeting, within a total deadline. imapclient's timeouts apply
        to each read, so a server sending one byte at a time would hold a plain call forever;
        no socket is reachable before the constructor returns, so it runs on a helper thread
        that is left behind (and closes what it gets, if it ever does) when time is up."""
        s = self.settings
        deadline = s.connect_timeout_seconds + 2 * s.read_timeout_seconds
        outcome: dict[str, object] = {}
        done = threading.Event()
        lock = threading.Lock()

        def attempt() -> None:
            try:
                made = self._client_factory()
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc
            else:
                with lock:
                    if outcome.get("abandoned"):
                        _shutdown(made)
                    else:
                        outcome["client"] = made
            finally:
                done.set()

        threading.Thread(target=attempt, name="imap-connect", daemon=True).start()
        finished = done.wait(deadline)
        with lock:
            if not finished:
                outcome["abandoned"] = True
                raise ImapError(f"no complete greeting from {s.host}:{s.port} within {deadline:.0f} s")
        error = outcome.get("error")
        if isinstance(error, CONNECTION_ERRORS):
            raise ImapError(f"cannot connect to {s.host}:{s.port}: {_describe(error)}") from error
        if isinstance(error, BaseException):
            raise error
        client = outcome["client"]
        assert isinstance(client, IMAPClient)
        return client

    def _command_deadline(self, expected_bytes: int = 0) -> float:
        """How long one command may take in all: ten read timeouts, plus time for the bytes it
        brings at a slow 100 KiB/s, so a large batch is never cut on a slow link."""
        return self.settings.read_timeout_seconds * 10 + expected_bytes / (100 * 1024)

    @contextmanager
    def _watchdog(self, seconds: float) -> Iterator[None]:
        """Past the deadline the socket is shut from a timer thread, so a read that keeps
        receiving a trickle fails in the owning thread instead of going on for ever."""
        timer = threading.Timer(seconds, self.abort)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _log_in(self, client: IMAPClient) -> None:
        """LOGIN carries ASCII only; a password with other characters goes by AUTHENTICATE PLAIN,
        which is UTF-8 (RFC 4616). Never let an encoding error, which quotes the offending
        character and its position, tell the log anything about the password."""
        user, password = self.settings.username, self._password
        if user.isascii() and password.isascii():
            client.login(user, password)
            return
        if not client.has_capability("AUTH=PLAIN"):
            raise IMAPClientError("the password or user name is not ASCII, and the server offers no AUTH=PLAIN for it")
        try:
            client.plain_login(user, password)
        except UnicodeError:
            raise IMAPClientError("the server could not take the non-ASCII password or user name") from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # a dead connection cannot log out politely; drop it
            _shutdown(client)

    def _require(self) -> IMAPClient:
        if self._client is None:
            raise ImapError("not connected")
        return self._client

    def _run(self, what: str, action: Callable[[IMAPClient], T], expected_bytes: int = 0) -> T:
        client = self._require()
        try:
            with self._watchdog(self._command_deadline(expected_bytes)):
                return action(client)
        except CONNECTION_ERRORS as exc:
            self._client = None
            _shutdown(client)
            raise ImapError(f"IMAP {what} failed: {_describe(exc)}") from exc

    def new_uids(self, after_uid: int | None) -> list[int]:
        """UIDs to process, oldest first: above the last one processed, or (first run) every
        message not yet seen (seen mode) or every message in the folder (move mode)."""

        def search(client: IMAPClient) -> list[int]:
            client.noop()  # lets the server report mail that arrived since the last command
            if after_uid is not None:
                # "N:*" always includes the highest UID even when it is below N, so filter.
                found = client.search(["UID", f"{after_uid + 1}:*", "NOT", "DELETED"])
                return sorted(u for u in found if u > after_uid)
            if self.settings.processed_action == "seen":
                return sorted(client.search(["UNSEEN", "NOT", "DELETED"]))
            return sorted(client.search(["NOT", "DELETED"]))

        return self._run("search", search)

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[FetchedMessage]:
        """Sizes and arrival times first; then the bodies of those under the limit, unread."""
        if not uids:
            return []
        meta = self._run("fetch", lambda c: c.fetch(list(uids), ["RFC822.SIZE", "INTERNALDATE"]))
        wanted = [u for u in uids if u in meta and int(meta[u].get(b"RFC822.SIZE", 0)) <= max_bytes]
        expected = sum(int(meta[u].get(b"RFC822.SIZE", 0)) for u in wanted)
        bodies = self._run("fetch", lambda c: c.fetch(wanted, ["BODY.PEEK[]"]), expected) if wanted else {}
        result = []
        for uid in uids:
            info = meta.get(uid)
            if info is None:
                continue  # expunged meanwhile, or the server left it out: the next cycle sees
            size = int(info.get(b"RFC822.SIZE", 0))
            internal = info.get(b"INTERNALDATE")
            arrived = as_utc(internal) if isinstance(internal, datetime) else None
            if size > max_bytes:
                result.append(FetchedMessage(uid, size, arrived, None))
                continue
            body = bodies.get(uid, {}).get(b"BODY[]")
            if body is None:
                continue
            result.append(FetchedMessage(uid, size, arrived, bytes(body)))
        return result

    def mark_processed(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        if self.settings.processed_action == "move":
            self.move(uids, self.settings.processed_folder)
        else:
            self._run("store", lambda c: c.add_flags(list(uids), [b"\\Seen"], silent=True))

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move messages to a folder, creating it if needed; copy and expunge where MOVE is missing."""
        if not uids:
            return

        def do_move(client: IMAPClient) -> None:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            if client.has_capability("MOVE"):
                client.move(list(uids), folder)
                return
            client.copy(list(uids), folder)
            client.add_flags(list(uids), [b"\\Deleted"], silent=True)
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(list(uids))
            else:
                client.expunge()

        self._run("move", do_move)

    def append(self, folder: str, raw: bytes, when: datetime | None = None) -> None:
        """Put a message back into a folder (quarantine retry of a message kept only on the server)."""
        self._run("append", lambda c: c.append(folder, raw, msg_time=when))

    # --- IDLE (RFC 2177) -----------------------------------------------------------------
    # Only the thread that owns this inbox calls these, except abort().

    def supports_idle(self) -> bool:
        return self._run("capability", lambda c: c.has_capability("IDLE"))

    def start_idle(self) -> None:
        self._run("idle", lambda c: c.idle())

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds in IDLE; True when the server announced new mail.

        imapclient's idle_check() returns [] both on silence and on a closed socket, so the
        socket is watched here: readable with nothing to read means the server hung up.
        """
        client = self._require()
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(client.socket(), selectors.EVENT_READ)
                ready = selector.select(timeout)
            except (OSError, ValueError) as exc:  # ValueError: the socket was closed (fileno -1)
                self._client = None
                _shutdown(client)
                raise ImapError(f"IMAP idle failed: {_describe(exc)}") from exc
        if not ready:
            return False
        responses = self._run("idle", lambda c: c.idle_check(timeout=0))
        if not responses or any(_is_bye(r) for r in responses):
            self._client = None
            _shutdown(client)
            raise ImapError("IMAP idle failed: the server closed the connection")
        return any(_announces_mail(r) for r in responses)

    def end_idle(self) -> bool:
        """Leave IDLE; True when the server announced new mail meanwhile."""
        _text, responses = self._run("idle done", lambda c: c.idle_done())
        return any(_announces_mail(r) for r in responses)

    def abort(self) -> None:
        """Cut the connection from another thread, so that a read blocked on a server that
        stopped answering returns at once (with an error, in the owning thread)."""
        client = self._client
        if client is None:
            return
        try:
            client.socket().shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass

    def check(self) -> str:
        """A short description of the connected folder, for check-config."""
        client = self._require()
        status = self._run("status", lambda c: c.folder_status(self.settings.folder, ["MESSAGES", "UNSEEN"]))
        idle = "IDLE" if client.has_capability("IDLE") else "no IDLE"
        return (
            f"folder {self.settings.folder!r}: {status[b'MESSAGES']} messages, {status[b'UNSEEN']} unseen; "
            f"UIDVALIDITY {self.uidvalidity}; {idle}"
        )


def _announces_mail(response: object) -> bool:
    # "* 12 EXISTS" (and "* 1 RECENT" on servers that still send it). EXPUNGE and FETCH flag
    # changes are ignored: our own \Seen and moves cause them, and would wake us in a loop.
    return isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _is_bye(response: object) -> bool:
    return isinstance(response, tuple) and len(response) >= 1 and response[0] == b"BYE"


def _shutdown(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:  # already closed
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, bytes):  # pragma: no cover - imaplib sometimes raises with bytes args
        text = exc.decode("utf-8", "replace")
    return f"{exc.__class__.__name__}: {text}"[:300]
