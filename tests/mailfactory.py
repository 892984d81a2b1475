"""Builds ParsedMail values and raw messages for tests of the pure core."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from datetime import UTC, datetime
from typing import Any

from ticketure_mail.model import Address, ParsedMail


def parsed(
    subject: str = "Printer on floor 2 is jammed",
    from_addr: str = "client@example.com",
    name: str = "Casey Client",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> ParsedMail:
    values: dict[str, Any] = {
        "message_id": fields.pop("message_id", f"{abs(hash((subject, from_addr)))}@example.com"),
        "subject": subject,
        "from_address": Address(name, from_addr) if from_addr else None,
        "body_text": "Hello, please help.",
        "headers": {k.lower(): (v,) for k, v in (headers or {}).items()},
        "content_digest": "d" * 64,
    }
    values.update(fields)
    return ParsedMail(**values)


def raw_message(
    subject: str | None = "Printer on floor 2 is jammed",
    sender: str = "Casey Client <client@example.com>",
    to: str = "support@ticketure.test",
    body: str = "Hello,\nthe printer on floor 2 shows a paper jam.\n",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = to
    if subject is not None:
        msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="client.example.com")
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


def slow_to_parse(message_id: str) -> bytes:
    """A message the parser takes seconds over: 100,000 tiny parts (3.6 MB)."""
    head = (f"From: Hostile <hostile@example.org>\r\nTo: support@ticketure.test\r\nSubject: slow\r\n"
            f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="B"\r\n\r\n').encode()
    return head + b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 100_000 + b"--B--\r\n"
