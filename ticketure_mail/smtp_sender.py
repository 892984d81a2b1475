"""Sends queued mail over SMTP, one connection for a batch, and sorts failures into retry or give up."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from .config import SmtpSettings
from .imap_inbox import tls_context

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

    def send_batch(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        """Send every envelope over one connection. Raises SmtpUnavailable if none could be tried."""
        if not envelopes:
            return []
        return asyncio.run(self._send_batch(list(envelopes)))

    async def _send_batch(self, envelopes: list[Envelope]) -> list[SendResult]:
        client = self._client()
        try:
            async with asyncio.timeout(self.settings.timeout_seconds * 2):
                await client.connect()
                if self.settings.username:
                    await client.login(self.settings.username, self._password)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise SmtpUnavailable(_describe(exc)) from exc
        results: list[SendResult] = []
        try:
            for index, envelope in enumerate(envelopes):
                result = await self._send_one(client, envelope)
                results.append(result)
                if result.status == SendStatus.TEMPORARY and not client.is_connected:
                    # The session is gone: the rest were not tried and count as temporary.
                    results.extend(
                        SendResult(e.key, SendStatus.TEMPORARY, "not tried: connection lost")
                        for e in envelopes[index + 1 :]
                    )
                    break
        finally:
            try:
                async with asyncio.timeout(self.settings.timeout_seconds):
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
        return results

    async def _send_one(self, client: aiosmtplib.SMTP, envelope: Envelope) -> SendResult:
        options: list[str] = []
        if not envelope.recipient.isascii() or not envelope.sender.isascii():
            if not client.supports_extension("smtputf8"):
                return SendResult(envelope.key, SendStatus.PERMANENT, "address needs SMTPUTF8, which the relay lacks")
            options.append("SMTPUTF8")
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                refused, _reply = await client.sendmail(
                    envelope.sender, [envelope.recipient], envelope.data, mail_options=options
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


def _by_code(code: int) -> SendStatus:
    return SendStatus.TEMPORARY if 400 <= code < 500 else SendStatus.PERMANENT


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}".replace("\n", " ")[:500]
