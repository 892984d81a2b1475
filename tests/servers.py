"""Real, throw-away mail and database servers on 127.0.0.1 for the tests and the demo script.

This module must not import pytest: the demo script uses it too.

* :class:`DovecotServer` - an IMAP server (Dovecot) in a temporary folder, with accounts
  from a passwd-file and maildir storage; it can be stopped and started again on the same
  port with the same mail, so fault tests can pull the server from under a running client.
* :class:`SmtpSink` - an SMTP server (aiosmtpd) that records what it is given and can be
  told to refuse the next recipients or messages with a chosen reply code.
* :class:`PostgresDatabase` - a fresh, uniquely named database on the local PostgreSQL.
* :func:`free_port` - a TCP port on 127.0.0.1 that nothing listens on right now.

Every server here listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import atexit
import email
import email.policy
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import psycopg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from imapclient import IMAPClient, SocketTimeout
from psycopg import sql

__all__ = [
    "DovecotMissingError",
    "DovecotServer",
    "ImapAccount",
    "PostgresDatabase",
    "PostgresUnavailableError",
    "ReceivedMessage",
    "ServerStartError",
    "SmtpSink",
    "drop_leftover_databases",
    "free_port",
]

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on at the moment of the call.

    Another process may take it before the caller binds it; the servers below retry with a
    new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------
# Dovecot (IMAP)
# --------------------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its log."""


class DovecotMissingError(ServerStartError):
    """The ``dovecot`` binary is missing: ``scripts/setup`` installs it."""


# Folders of DovecotServer instances carry this prefix so that a later run can find and
# clean up what a killed run (SIGKILL, a hard timeout) left behind.
_DOVECOT_DIR_PREFIX = "ticketure-dovecot-"
_OWNER_FILE = "owner.pid"

# Servers not yet closed, so the atexit hook can stop them if a fixture finalizer never ran.
_LIVE_DOVECOTS: set[DovecotServer] = set()
_LIVE_LOCK = threading.Lock()


def _close_live_dovecots() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE_DOVECOTS)
    for server in servers:
        with suppress(Exception):
            server.close()


atexit.register(_close_live_dovecots)


def _find_binary(name: str) -> str | None:
    # /usr/sbin is not on a non-root user's PATH on Debian, but that is where dovecot and
    # useradd live.
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _ensure_system_user(name: str) -> tuple[int, int]:
    """Return (uid, gid) of ``name``, creating it as an unprivileged system user if missing."""
    with suppress(KeyError):
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    if os.geteuid() != 0:
        raise ServerStartError(
            f"the system user {name!r} does not exist and only root can create it "
            f"(run: useradd --system -M -s /usr/sbin/nologin {name})"
        )
    useradd = _find_binary("useradd")
    if useradd is None:
        raise ServerStartError("useradd not found; cannot create the Dovecot mail user")
    # Another test session may be creating the same user at the same moment: useradd then
    # fails (user exists, or /etc/passwd is locked), so retry and look again.
    last_error = ""
    for _ in range(20):
        result = subprocess.run(
            [useradd, "--system", "-M", "-U", "-s", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        with suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        last_error = result.stderr.strip()
        time.sleep(0.1)
    raise ServerStartError(f"could not create the system user {name!r}: {last_error}")


def _sweep_abandoned_dovecots(tmp_root: Path) -> None:
    """Stop Dovecots and remove folders left by test processes that no longer exist."""
    for folder in tmp_root.glob(_DOVECOT_DIR_PREFIX + "*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        pid_file = folder / "run" / "master.pid"
        with suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            # Only kill the pid if it really is the Dovecot of that folder (pids get reused).
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"dovecot" in cmdline and str(folder).encode() in cmdline:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ImapAccount:
    """One mailbox on a :class:`DovecotServer`: what a client needs to log in, plus helpers."""

    server: DovecotServer = field(repr=False)
    address: str
    password: str = field(repr=False)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def username(self) -> str:
        """The IMAP login name (the address itself)."""
        return self.address

    def connect(self, timeout: float = 10.0) -> IMAPClient:
        """A logged-in IMAPClient (plain text, no TLS); use it as a context manager."""
        return self.server.connect(self.address, self.password, timeout=timeout)

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: Sequence[str | bytes] = (),
        internal_date: datetime | None = None,
    ) -> int:
        """Store ``raw`` in ``folder`` of this mailbox; return its UID."""
        return self.server.append(
            self.address, self.password, raw, folder, flags=flags, internal_date=internal_date
        )

    def fetch_flags(self, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """UID -> stored flags of every message in ``folder`` (see DovecotServer.fetch_flags)."""
        return self.server.fetch_flags(self.address, self.password, folder)

    def list_folder_uids(self, folder: str = "INBOX") -> list[int]:
        """The UIDs in ``folder``, ascending."""
        return self.server.list_folder_uids(self.address, self.password, folder)

    def folders(self) -> list[str]:
        """Names of every folder of this mailbox."""
        with self.connect() as client:
            return sorted(str(name) for _flags, _delim, name in client.list_folders())


class DovecotServer:
    """A private Dovecot IMAP server in a temporary folder, listening on 127.0.0.1.

    ``start()`` picks a free port the first time; ``stop()`` ends the process but keeps the
    folder, so a later ``start()`` (or ``restart()``) serves the same mail on the same port.
    ``close()`` stops it and removes the folder; it also runs at interpreter exit as a
    safety net. Usable as a context manager (start on enter, close on exit).

    Folder names nest with ``hierarchy_separator``: "/" (as at most providers) by default,
    or "." (Dovecot's maildir default, as on many self-hosted servers).

    Must run as root (it creates the unprivileged mail user on first use, and Dovecot's
    auth and login processes switch users).
    """

    def __init__(
        self,
        *,
        mail_user: str = "ticketure-mail-test",
        binary: str = "dovecot",
        start_timeout: float = 10.0,
        hierarchy_separator: str = "/",
    ) -> None:
        if hierarchy_separator not in ("/", "."):
            raise ValueError("hierarchy_separator must be '/' or '.'")
        self.mail_user = mail_user
        self.hierarchy_separator = hierarchy_separator
        self.binary = binary
        self.start_timeout = start_timeout
        self._directory: Path | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DovecotServer has not been started")
        return self._port

    @property
    def directory(self) -> Path:
        """The temporary folder with the config, log, passwd-file and mail."""
        if self._directory is None:
            raise RuntimeError("DovecotServer has not been started")
        return self._directory

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start Dovecot and wait until it greets on its port; raise with the log if not."""
        with self._lock:
            if self.running:
                return self
            binary = _find_binary(self.binary)
            if binary is None:
                raise DovecotMissingError(
                    f"{self.binary!r} is not installed (looked on PATH and in /usr/sbin). "
                    "Run scripts/setup, which installs Debian's dovecot-imapd, or "
                    "`apt-get install -y dovecot-imapd`."
                )
            if os.geteuid() != 0:
                raise ServerStartError(
                    "DovecotServer must run as root: Dovecot's login and auth processes "
                    "switch users, and mail is stored as a dedicated system user"
                )
            # The config exists from the first start on; later starts reuse it (and so
            # the port and the mail).
            first_start = (
                self._directory is None or not (self._directory / "dovecot.conf").exists()
            )
            if self._directory is None:
                self._create_directory()
            # A port picked by free_port() can be taken before Dovecot binds it; on the
            # first start that is retried with another port, on a restart the port must
            # stay the same, so it is an error.
            attempts = 5 if first_start else 1
            for attempt in range(attempts):
                if first_start:
                    self._port = free_port()
                    self._write_config()
                try:
                    self._launch(binary)
                    return self
                except ServerStartError:
                    if attempt + 1 < attempts and "Address already in use" in self.log_text():
                        continue
                    raise
            raise AssertionError("unreachable")

    def stop(self, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop the Dovecot process (clients are disconnected); keep mail, users and port.

        ``graceful=True`` sends SIGTERM and waits for Dovecot's own shutdown (about 1 s);
        ``graceful=False`` SIGKILLs every Dovecot process at once, like a crash.
        """
        with self._lock:
            process = self._process
            self._process = None
            if process is None:
                return
            if not graceful:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=timeout)
            # Children that outlive the master would keep the listening socket open and
            # make the next start fail with "Address already in use".
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while self._port is not None and _port_accepts(self.host, self._port, 0.2):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {self._port} still accepts after Dovecot stopped")
                time.sleep(0.02)

    def restart(self, graceful: bool = True) -> None:
        """Stop and start again: same port, same mail and accounts; clients are cut off."""
        with self._lock:
            self.stop(graceful=graceful)
            self.start()

    def close(self) -> None:
        """Stop the server for good and remove its folder. Safe to call more than once."""
        with self._lock:
            # Nothing of it is kept, so there is no point waiting for a clean shutdown.
            self.stop(graceful=False)
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
            with _LIVE_LOCK:
                _LIVE_DOVECOTS.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts ----------------------------------------------------------------------

    def add_user(self, address: str, password: str) -> ImapAccount:
        """Create (or re-password) an IMAP account; works before and after ``start()``.

        A new account can log in at once. A changed password may take a second to apply
        (Dovecot rereads a changed passwd-file at most once a second).
        """
        for value, what in ((address, "address"), (password, "password")):
            if not value or any(ch in value for ch in ":\r\n\0"):
                raise ValueError(f"the {what} must be non-empty without ':', CR, LF or NUL")
        if "/" in address or address.startswith("."):
            raise ValueError("the address must not contain '/' or start with '.'")
        with self._lock:
            if self._directory is None:
                self._create_directory()
            # Dovecot lowercases login names before the lookup (auth_username_format).
            users = self.directory / "users"
            target = users / address.lower()
            scratch = users / f".{address.lower()}.new"
            # Written aside and renamed into place: Dovecot must never read half a file.
            scratch.write_text(f"{address.lower()}:{{PLAIN}}{password}\n")
            os.replace(scratch, target)
        return ImapAccount(self, address, password)

    # -- IMAP helpers ------------------------------------------------------------------

    def connect(self, user: str, password: str, timeout: float = 10.0) -> IMAPClient:
        """A logged-in IMAPClient for ``user``; the caller logs out (context manager)."""
        client = IMAPClient(
            self.host,
            port=self.port,
            ssl=False,
            timeout=SocketTimeout(connect=timeout, read=timeout),
        )
        try:
            if password.isascii() and user.isascii():
                client.login(user, password)
            else:  # LOGIN is ASCII only; AUTHENTICATE PLAIN is UTF-8
                client.plain_login(user, password)
        except BaseException:
            with suppress(Exception):
                client.shutdown()
            raise
        return client

    @contextmanager
    def _session(self, user: str, password: str) -> Iterator[IMAPClient]:
        client = self.connect(user, password)
        try:
            yield client
        finally:
            with suppress(Exception):
                client.logout()

    def append(
        self,
        user: str,
        password: str,
        raw: bytes,
        folder: str = "INBOX",
        flags: Sequence[str | bytes] = (),
        internal_date: datetime | None = None,
    ) -> int:
        """APPEND ``raw`` to ``folder`` (created if missing); return the new message's UID.

        ``internal_date`` should be timezone-aware; a naive one is read as local time by
        imapclient.
        """
        with self._session(user, password) as client:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags), msg_time=internal_date)
        text = response if isinstance(response, bytes) else str(response).encode()
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", text)
        if match is None:
            raise RuntimeError(f"APPEND answer without APPENDUID (UIDPLUS off?): {text!r}")
        return int(match.group(1))

    def fetch_flags(
        self, user: str, password: str, folder: str = "INBOX"
    ) -> dict[int, tuple[bytes, ...]]:
        """UID -> flags of every message in ``folder``, read without changing anything.

        ``\\Recent`` is left out: it belongs to an IMAP session, not to the message, and
        would make the answer depend on which connection looked first.
        """
        with self._session(user, password) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            flags = client.get_flags(uids)
        return {
            int(uid): tuple(f for f in flags[uid] if f.lower() != b"\\recent")
            for uid in sorted(flags)
        }

    def list_folder_uids(self, user: str, password: str, folder: str) -> list[int]:
        """The UIDs in ``folder``, ascending; raises if the folder does not exist."""
        with self._session(user, password) as client:
            client.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in client.search("ALL"))

    # -- diagnostics -------------------------------------------------------------------

    def log_text(self) -> str:
        """Dovecot's log (and anything it wrote to stderr before its log was set up)."""
        if self._directory is None:
            return ""
        parts = []
        for name in ("dovecot.log", "stderr.log"):
            path = self._directory / name
            with suppress(OSError):
                text = path.read_text(errors="replace")
                if text.strip():
                    parts.append(f"==> {name} <==\n{text}")
        return "\n".join(parts)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of :meth:`log_text`, for failure reports."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------

    def _create_directory(self) -> None:
        tmp_root = Path(tempfile.gettempdir())
        _sweep_abandoned_dovecots(tmp_root)
        uid, gid = _ensure_system_user(self.mail_user)
        directory = Path(tempfile.mkdtemp(prefix=_DOVECOT_DIR_PREFIX, dir=tmp_root))
        # mkdtemp makes a 0700 folder; the mail user must be able to walk through it to
        # its maildirs or the first APPEND fails with "[SERVERBUG] Internal error".
        directory.chmod(0o755)
        (directory / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        for sub in ("run", "state", "users"):
            (directory / sub).mkdir(mode=0o755)
        mail = directory / "mail"
        mail.mkdir(mode=0o700)
        os.chown(mail, uid, gid)
        self._directory = directory
        with _LIVE_LOCK:
            _LIVE_DOVECOTS.add(self)

    def _write_config(self) -> None:
        directory = self.directory
        try:
            login_user = pwd.getpwnam("dovenull").pw_name
        except KeyError:
            # dovecot-core creates dovenull; without it, the mail user will do for tests.
            login_user = self.mail_user
        group = grp.getgrgid(pwd.getpwnam(self.mail_user).pw_gid).gr_name
        config = f"""\
# Throw-away Dovecot for ticketure-mail tests; generated by tests/servers.py.
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
info_log_path = {directory}/dovecot.log
listen = {LOCALHOST}
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Dovecot delays each failed login by 2 s by default; tests of bad passwords need not wait.
auth_failure_delay = 0
# Running as root: internal processes stay root, login processes use an unprivileged user.
default_login_user = {login_user}
default_internal_user = root
default_internal_group = root
first_valid_uid = 0
# Tests throw the mail away, so fsync buys nothing but time.
mail_fsync = never
mail_location = maildir:{directory}/mail/%u
namespace inbox {{
  inbox = yes
  separator = {self.hierarchy_separator}
}}
passdb {{
  driver = passwd-file
  # One file per account: Dovecot rereads a changed passwd-file at most once a second,
  # so an account added to a shared file right after a lookup would stay unknown.
  args = scheme=PLAIN username_format=%u {directory}/users/%u
}}
userdb {{
  driver = static
  args = uid={self.mail_user} gid={group} home={directory}/mail/%u
}}
protocol imap {{
  # Fault tests reconnect a lot; the default of 10 per user and address is too tight.
  mail_max_userip_connections = 200
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {LOCALHOST}
    port = {self._port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  # After a failed login Dovecot slows every later login from the same address by 2-15 s
  # (its auth penalty, kept by anvil). All tests connect from 127.0.0.1, so one test of a
  # wrong password would slow the ones after it; without this socket auth skips the penalty.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        (directory / "dovecot.conf").write_text(config)

    def _launch(self, binary: str) -> None:
        directory = self.directory
        config = directory / "dovecot.conf"
        stderr = (directory / "stderr.log").open("ab")
        try:
            # -F keeps the master as our child, so we can wait for it; its own session
            # keeps a terminal's Ctrl-C from reaching it before our cleanup does.
            self._process = subprocess.Popen(
                [binary, "-F", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServerStartError(
                    f"dovecot exited with code {code} during start-up on port {self._port}"
                    f"\n{self.log_text()}"
                )
            if self._greets():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"dovecot did not accept IMAP connections on {self.host}:{self._port} "
                    f"within {self.start_timeout:.0f} s\n{self.log_text()}"
                )
            time.sleep(0.05)

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as conn:
                greeted = conn.recv(64).startswith(b"* OK")
                # Log out politely, or Dovecot logs each probe as a connection reset.
                if greeted:
                    conn.sendall(b"p LOGOUT\r\n")
                    conn.recv(256)
                return greeted
        except OSError:
            return False


# --------------------------------------------------------------------------------------
# SMTP sink (aiosmtpd)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the sink accepted: the envelope, the raw bytes and when it arrived."""

    mail_from: str  # "" for the null sender MAIL FROM:<>
    rcpt_tos: list[str]
    data: bytes  # as received, dot-unstuffed, CRLF line ends
    received_at: float  # time.monotonic()
    received_at_utc: datetime  # aware, UTC
    login: str | None = None  # the AUTH user name, when the client logged in

    def message(self) -> EmailMessage:
        """``data`` parsed with the modern email policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


# Reply texts for the codes tests ask for most; any other 4xx/5xx gets a generic text.
_REPLY_TEXTS = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.0 Mailbox unavailable, try again later",
    451: "4.3.0 Try again later",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 No such user",
    551: "5.1.6 User not local",
    552: "5.2.2 Mailbox full",
    553: "5.1.3 Bad destination mailbox address syntax",
    554: "5.7.1 Transaction failed",
}


@dataclass
class _FailurePlan:
    reply: str
    stage: Literal["rcpt", "data"]
    remaining: int | None  # None: until stop_failing()


class _SinkHandler:
    """aiosmtpd handler hooks; they run in the controller's thread."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    @staticmethod
    def _refuse(server: SMTP, reply: str) -> str:
        if reply.startswith("421") and server.transport is not None:
            # aiosmtpd writes the reply before this loop runs its next callback, and
            # close() sends what is buffered first, so the client still reads the 421.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Enforced here rather than with aiosmtpd's auth_required, which warns about AUTH
        # without TLS on every connection (and warnings are errors in this project).
        if self.sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.sink._take_failure("rcpt")
        if refusal is not None:
            return self._refuse(server, refusal)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        refusal = self.sink._take_failure("data")
        if refusal is not None:
            return self._refuse(server, refusal)
        if self.sink.data_delay_seconds:
            # A relay that scans mail before it answers the end of data.
            await asyncio.sleep(self.sink.data_delay_seconds)
        sender = envelope.mail_from or ""
        data = envelope.original_content or b""
        login = None
        if isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        self.sink._record(
            ReceivedMessage(
                # aiosmtpd may hand over the null sender as "<>"; tests compare with "".
                mail_from="" if sender == "<>" else sender,
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(data),
                received_at=time.monotonic(),
                received_at_utc=datetime.now(UTC),
                login=login,
            )
        )
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """An SMTP server on 127.0.0.1 that keeps every accepted message in memory.

    Defaults follow a typical relay: no SMTPUTF8, no STARTTLS, no AUTH. With
    ``auth=(user, password)`` it offers AUTH PLAIN/LOGIN without TLS and refuses MAIL FROM
    until the client has logged in. Usable as a context manager (start on enter, stop on
    exit). Thread-safe: the server runs in its own thread with its own event loop.
    """

    def __init__(
        self,
        *,
        enable_smtputf8: bool = False,
        auth: tuple[str, str] | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        self.enable_smtputf8 = enable_smtputf8
        self.auth = auth
        # Seconds the sink waits before it answers the end of each message's data.
        self.data_delay_seconds = 0.0
        self.ready_timeout = ready_timeout
        self._controller: Controller | None = None
        self._port: int | None = None
        self._messages: list[ReceivedMessage] = []
        self._failure: _FailurePlan | None = None
        self._refusals = 0
        self._condition = threading.Condition()
        self._lifecycle = threading.Lock()

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SmtpSink has not been started")
        return self._port

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free port; retries with another port if it was taken meanwhile."""
        with self._lifecycle:
            if self._controller is not None:
                return self
            last_error: Exception | None = None
            for _ in range(5):
                port = free_port()
                controller = Controller(
                    _SinkHandler(self),
                    hostname=LOCALHOST,
                    # aiosmtpd 1.4.6 probes the configured port to see that it is up, so
                    # port=0 cannot work: the port is chosen here instead.
                    port=port,
                    # Without it aiosmtpd calls getfqdn(), which can block for seconds.
                    server_hostname="localhost",
                    ready_timeout=self.ready_timeout,
                    enable_SMTPUTF8=self.enable_smtputf8,
                    authenticator=self._authenticate if self.auth else None,
                    auth_require_tls=False,
                )
                try:
                    controller.start()
                except OSError as error:  # the port was taken between probe and bind
                    last_error = error
                    self._discard(controller)
                    continue
                except BaseException:
                    self._discard(controller)
                    raise
                self._controller = controller
                self._port = port
                return self
            raise ServerStartError(f"SMTP sink could not bind a port: {last_error}")

    def stop(self) -> None:
        """Stop the server. Safe to call more than once; the messages stay readable."""
        with self._lifecycle:
            controller = self._controller
            self._controller = None
            if controller is not None:
                controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _discard(controller: Controller) -> None:
        # A controller whose bind failed still owns an event loop; close it so it is not
        # reported as an unclosed resource later.
        with suppress(Exception):
            controller.stop(no_assert=True)
        if not controller.loop.is_closed():
            with suppress(Exception):
                controller.loop.close()

    # -- recorded messages -------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A copy of every accepted message, oldest first."""
        with self._condition:
            return list(self._messages)

    @property
    def refusals(self) -> int:
        """How many RCPT/DATA commands were refused by fail_next() since the last clear()."""
        with self._condition:
            return self._refusals

    def clear(self) -> None:
        """Forget the recorded messages and the refusal count."""
        with self._condition:
            self._messages.clear()
            self._refusals = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages were accepted; return them all.

        Raises TimeoutError (naming what did arrive) if they do not within ``timeout`` s.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._messages) >= count, timeout):
                got = [(m.mail_from, m.rcpt_tos) for m in self._messages]
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout} s, got {len(got)}: {got}"
                )
            return list(self._messages)

    # -- failure injection -------------------------------------------------------------

    def fail_next(
        self,
        code: int,
        count: int | None = 1,
        stage: Literal["rcpt", "data"] = "rcpt",
        message: str | None = None,
    ) -> None:
        """Refuse the next ``count`` RCPT TO (or DATA) commands with ``code``.

        Each refused command uses up one; ``count=None`` refuses until stop_failing().
        With stage "rcpt" a message to two recipients and count=1 is a partial refusal.
        ``message`` replaces the reply text, e.g. "4.7.1 Greylisted". After a 421 reply the
        sink also closes the connection, as a server going down does.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"a refusal needs a 4xx or 5xx code, not {code}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for 'until stop_failing()'")
        if stage not in ("rcpt", "data"):
            raise ValueError(f"stage must be 'rcpt' or 'data', not {stage!r}")
        generic = "4.0.0 Temporary failure" if code < 500 else "5.0.0 Permanent failure"
        default = _REPLY_TEXTS.get(code, generic)
        with self._condition:
            self._failure = _FailurePlan(f"{code} {message or default}", stage, count)

    def stop_failing(self) -> None:
        """Accept everything again."""
        with self._condition:
            self._failure = None

    def _take_failure(self, stage: str) -> str | None:
        with self._condition:
            plan = self._failure
            if plan is None or plan.stage != stage:
                return None
            if plan.remaining is not None:
                plan.remaining -= 1
                if plan.remaining <= 0:
                    self._failure = None
            self._refusals += 1
            return plan.reply

    def _record(self, message: ReceivedMessage) -> None:
        with self._condition:
            self._messages.append(message)
            self._condition.notify_all()

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if self.auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        good = secrets.compare_digest(auth_data.login, user.encode()) and secrets.compare_digest(
            auth_data.password, password.encode()
        )
        return AuthResult(success=good, handled=False, auth_data=auth_data if good else None)


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


class PostgresUnavailableError(RuntimeError):
    """The local PostgreSQL server cannot be reached."""


_DB_PREFIX = "ticketure_test"
_DB_NAME_RE = re.compile(rf"^{_DB_PREFIX}_(\d+)_[0-9a-f]+$")


def _maintenance_connection(
    host: str, port: int, user: str, dbname: str
) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            host=host, port=port, user=user, dbname=dbname, autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as error:
        raise PostgresUnavailableError(
            f"cannot connect to PostgreSQL at {host}:{port} as {user!r} (database {dbname!r}): "
            f"{error}".rstrip()
            + "\nThe tests need the local server with trust auth; start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
        ) from error


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    # Connections a test forgot to close would make DROP DATABASE fail.
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    for attempt in range(50):
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            return
        except psycopg.errors.ObjectInUse:
            # A terminated backend can take a moment to go away.
            if attempt == 49:
                raise
            time.sleep(0.05)


def drop_leftover_databases(
    host: str = LOCALHOST, port: int = 5432, user: str = "postgres", maintenance_db: str = "test"
) -> list[str]:
    """Drop test databases whose creating process is gone (a killed run); return their names."""
    dropped = []
    with _maintenance_connection(host, port, user, maintenance_db) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (_DB_PREFIX + r"\_%",)
        ).fetchall()
        for (name,) in rows:
            match = _DB_NAME_RE.match(name)
            if match and not _pid_alive(int(match.group(1))):
                _drop(conn, name)
                dropped.append(name)
    return dropped


class PostgresDatabase:
    """A fresh database on the local PostgreSQL, named ``ticketure_test_<pid>_<random>``.

    ``create()`` makes it, ``url`` is its SQLAlchemy URL (psycopg 3 driver), ``drop()``
    ends any connection still open to it and drops it. Usable as a context manager.
    """

    def __init__(
        self,
        *,
        host: str = LOCALHOST,
        port: int = 5432,
        user: str = "postgres",
        maintenance_db: str = "test",
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.maintenance_db = maintenance_db
        # The pid in the name lets drop_leftover_databases() tell abandoned ones apart.
        self.name = f"{_DB_PREFIX}_{os.getpid()}_{secrets.token_hex(4)}"
        self._created = False

    @property
    def url(self) -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:5432/<name>``"""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.name}"

    @property
    def conninfo(self) -> str:
        """The libpq connection string, for psycopg.connect()."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.name}"

    def create(self) -> Self:
        with _maintenance_connection(self.host, self.port, self.user, self.maintenance_db) as c:
            # template0 cannot have connections, so a session connected to template1
            # elsewhere cannot make CREATE DATABASE fail.
            c.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(self.name)
                )
            )
        self._created = True
        return self

    def drop(self) -> None:
        """Drop the database (terminating its connections first). Safe to call twice."""
        if not self._created:
            return
        with _maintenance_connection(self.host, self.port, self.user, self.maintenance_db) as c:
            _drop(c, self.name)
        self._created = False

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.drop()
