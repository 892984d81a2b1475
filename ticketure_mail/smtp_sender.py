"""Sends queued mail over SMTP, one connection for a batch, and sorts failures into retry or give up."""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

import aiosmtplib

from .config import SmtpSettings
from .tls import tls_context

log = logging.getLogger(__name__)


class SendStatus(enum.Enum):
    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx, or the connection dropped: try again later
    PERMANENT = "permanent"  # 5xx, or an address the relay can never take


@dataclass(frozen=True)
class Envelope:
    key: int
    sender: str  # "" is the null reverse path
    recipient: str
    data: bytes


@dataclass(frozen=True)
class SendResult:
    key: int
    status: SendStatus
    detail: str = ""


class SmtpUnavailable(ConnectionError):
    """The relay cannot be reached or refused the session: nothing in the batch was sent."""


class SmtpSender:
    """Delivers envelopes through the configured relay."""

    def __init__(self, settings: SmtpSettings, password: str) -> None:
        self.settings = settings
        self._password = password

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = tls_context(s.verify_certificate, s.ca_file) if s.tls != "none" else None
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.tls == "ssl",
            # True, not None: None would upgrade only when offered and silently send in plain text.
            start_tls=s.tls == "starttls",
            tls_context=context,
            timeout=s.timeout_seconds,
            local_hostname="localhost" if s.host in ("127.0.0.1", "localhost", "::1") else None,
        )

    def session(self) -> SmtpSession:
        """A connection for a run of messages, opened on the first send; use it as a context manager."""
        return SmtpSession(self)

    async def _open(self) -> aiosmtplib.SMTP:
        client = self._client()
        try:
            async with asyncio.timeout(self.settings.timeout_seconds * 2):
                await client.connect()
                if self.settings.username:
                    await client.login(self.settings.username, self._password)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise SmtpUnavailable(_describe(exc)) from exc
        return client

    async def _close(self, client: aiosmtplib.SMTP) -> None:
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def _send_one(self, client: aiosmtplib.SMTP, envelope: Envelope) -> SendResult:
        options: list[str] = []
        if not envelope.recipient.isascii() or not envelope.sender.isascii():
            if not client.supports_extension("smtputf8"):
                return SendResult(envelope.key, SendStatus.PERMANENT, "address needs SMTPUTF8, which the relay lacks")
            options.append("SMTPUTF8")
        # The whole transaction of one message gets the long data timeout: the reply to the end
        # of data is the one a slow relay delays, and a timeout there would resend what it took.
        wait = max(self.settings.data_timeout_seconds, self.settings.timeout_seconds)
        try:
            async with asyncio.timeout(wait):
                refused, _reply = await client.sendmail(
                    envelope.sender, [envelope.recipient], envelope.data, mail_options=options, timeout=wait
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = min((r.code for r in exc.recipients), default=550)
            return SendResult(envelope.key, _by_code(code), _describe(exc))
        except aiosmtplib.SMTPResponseException as exc:
            return SendResult(envelope.key, _by_code(exc.code), _describe(exc))
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError, TimeoutError) as exc:
            client.close()
            return SendResult(envelope.key, SendStatus.TEMPORARY, _describe(exc))
        except (aiosmtplib.SMTPException, ValueError) as exc:
            # ValueError: aiosmtplib refuses control characters in an address; retrying cannot help.
            return SendResult(envelope.key, SendStatus.PERMANENT, _describe(exc))
        if refused:
            code = min(r[0] for r in refused.values())
            return SendResult(envelope.key, _by_code(code), f"refused: {refused}")
        return SendResult(envelope.key, SendStatus.SENT)

    def check(self) -> str:
        """Connect (and log in) once, for check-config."""

        async def probe() -> str:
            client = self._client()
            async with asyncio.timeout(self.settings.timeout_seconds * 2):
                await client.connect()
                try:
                    if self.settings.username:
                        await client.login(self.settings.username, self._password)
                    tls = "TLS" if client.is_connected and client.get_transport_info("sslcontext") else "no TLS"
                    return f"{self.settings.host}:{self.settings.port} accepted the session ({tls})"
                finally:
                    await client.quit()

        try:
            return asyncio.run(probe())
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SmtpUnavailable(_describe(exc)) from exc


class SmtpSession:
    """One SMTP connection kept open across a run of messages, so each acknowledgement costs
    one transaction on it rather than a new connection (about twice the throughput). Sending
    is synchronous: the caller records each result before the next message goes out, which
    keeps the repeat-on-crash window at one message."""

    def __init__(self, sender: SmtpSender) -> None:
        self._sender = sender
        # One event loop for the session's life: aiosmtplib's client is bound to the loop it connected on.
        self._runner = asyncio.Runner()
        self._client: aiosmtplib.SMTP | None = None
        self._lost = ""

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def send(self, envelope: Envelope) -> SendResult:
        """Send one message. Raises SmtpUnavailable, with nothing sent, when the relay cannot be
        reached or the connection was lost earlier in this session."""
        if self._lost:
            # A relay that dropped us (a 421, a reset) is not hammered again within one run.
            raise SmtpUnavailable(f"connection lost: {self._lost}")
        if self._client is None:
            self._client = self._runner.run(self._sender._open())
        result = self._runner.run(self._sender._send_one(self._client, envelope))
        if result.status == SendStatus.TEMPORARY and not self._client.is_connected:
            self._lost = result.detail
        return result

    def close(self) -> None:
        client, self._client = self._client, None
        try:
            if client is not None:
                if client.is_connected:
                    self._runner.run(self._sender._close(client))
                else:
                    client.close()
        finally:
            self._runner.close()


def _by_code(code: int) -> SendStatus:
    return SendStatus.TEMPORARY if 400 <= code < 500 else SendStatus.PERMANENT


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}".replace("\n", " ")[:500]
