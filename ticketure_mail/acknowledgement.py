"""Builds the acknowledgement a client receives, as bytes ready for the outbox; pure."""

from __future__ import annotations

import re
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime
from importlib import resources
from typing import Literal
from zoneinfo import ZoneInfo

from .config import Settings
from .loops import LOOP_HEADER
from .model import Address, ParsedMail, Priority, RequestType
from .subjects import reference_pattern, strip_reply_prefixes

AckKind = Literal["standard", "urgent", "escalated"]

PLACEHOLDERS = frozenset(
    {
        "greeting_name", "reference", "subject", "priority_label", "request_type_label", "due",
        "phone_lines", "markers", "urgent_target", "support_name",
    }
)
PRIORITY_NAMES = {1: "Urgent", 2: "High", 3: "Normal", 4: "Low"}
REQUEST_TYPE_LABELS = {
    RequestType.STANDARD: "Standard support",
    RequestType.URGENT: "Urgent / high priority",
    RequestType.WEB_REFINEMENT: "Web refinement",
    RequestType.PRODUCT_FEEDBACK: "Product feedback / bug",
    RequestType.API_REQUEST: "API request",
}
# References grows with every reply; keep the first (the thread root) and the latest few.
_MAX_REFERENCES = 10
_MAX_DISPLAY_NAME = 78
_MAX_SUBJECT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# Fold headers only past the hard limit: the standard library's folding at 78 moves a whole
# subject onto a continuation line or into needless encoded-words, which some clients show raw.
_ASCII_POLICY = SMTP.clone(max_line_length=998)
_UTF8_POLICY = SMTPUTF8.clone(max_line_length=998)


@dataclass(frozen=True)
class TicketFacts:
    """What an acknowledgement says about its ticket."""

    reference: str
    subject: str
    priority: Priority
    request_type: RequestType
    due_at: datetime


@dataclass(frozen=True)
class OutgoingMail:
    """A message ready to hand to SMTP."""

    message_id: str  # bare, without angle brackets
    recipient: str
    envelope_sender: str  # "" for the null sender
    subject: str
    data: bytes


def load_templates() -> dict[AckKind, string.Template]:
    """The built-in acknowledgement texts, checked to use only known placeholders."""
    templates: dict[AckKind, string.Template] = {}
    for kind in ("standard", "urgent", "escalated"):
        text = resources.files("ticketure_mail").joinpath("templates", f"{kind}.txt").read_text(encoding="utf-8")
        template = string.Template(text)
        unknown = set(template.get_identifiers()) - PLACEHOLDERS
        if unknown or not template.is_valid():
            raise ValueError(f"template {kind}.txt uses unknown placeholders: {sorted(unknown)}")
        templates[kind] = template
    return templates


def new_message_id(domain: str) -> str:
    """A globally unique Message-ID for mail we send, bare."""
    return f"ticketure.{uuid.uuid4().hex}@{domain}"


def reply_recipient(mail: ParsedMail) -> Address | None:
    """Where an answer goes: the first Reply-To mailbox, else the sender."""
    for candidate in mail.reply_to:
        if "@" in candidate.address:
            return candidate
    return mail.from_address


def format_due(due_at: datetime, zone: ZoneInfo) -> str:
    """A deadline as a person reads it, in the calendar's time zone, naming that zone."""
    local = due_at.astimezone(zone)
    return f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M} {local.tzname()} ({zone.key})"


def format_duration(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    if minutes % (60 * 24) == 0:
        days = minutes // (60 * 24)
        return f"{days} day{'s' if days != 1 else ''}"
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minutes"


def build_acknowledgement(
    kind: AckKind,
    facts: TicketFacts,
    mail: ParsedMail,
    recipient: Address,
    settings: Settings,
    templates: dict[AckKind, string.Template],
    message_id: str,
    now: datetime,
) -> OutgoingMail:
    """The acknowledgement for one ticket, answering one inbound message."""
    subject = ack_subject(facts.reference, facts.subject, settings.support.reference_prefix)
    body = templates[kind].substitute(_placeholder_values(facts, recipient, settings))

    needs_utf8 = not recipient.address.isascii()
    msg = EmailMessage(policy=_UTF8_POLICY if needs_utf8 else _ASCII_POLICY)
    msg["From"] = HeaderAddress(display_name=settings.smtp.from_name, addr_spec=settings.smtp.from_address)
    msg["To"] = _header_address(recipient)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{message_id}>"
    if mail.message_id:
        msg["In-Reply-To"] = f"<{mail.message_id}>"
        chain = [*mail.references, mail.message_id]
        if len(chain) > _MAX_REFERENCES:
            chain = [chain[0], *chain[-(_MAX_REFERENCES - 1) :]]
        msg["References"] = " ".join(f"<{m}>" for m in chain)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = settings.support.address
    msg[LOOP_HEADER] = facts.reference
    msg.set_content(body, cte="quoted-printable")
    return OutgoingMail(
        message_id=message_id,
        recipient=recipient.address,
        envelope_sender=settings.smtp.envelope_sender,
        subject=subject,
        data=msg.as_bytes(),
    )


def ack_subject(reference: str, subject: str, prefix: str) -> str:
    """``[REF] subject``, with reply prefixes and any earlier reference removed."""
    bare = strip_reply_prefixes(_one_line(subject))
    bare = reference_pattern(prefix).sub("", bare)
    bare = re.sub(r"\[\s*\]", "", bare)
    bare = re.sub(r"\s+", " ", bare).strip()
    if len(bare) > _MAX_SUBJECT:
        bare = bare[: _MAX_SUBJECT - 1].rstrip() + "…"
    return f"[{reference}] {bare or '(no subject)'}"


def _placeholder_values(facts: TicketFacts, recipient: Address, settings: Settings) -> dict[str, str]:
    zone = ZoneInfo(settings.calendar.timezone)
    markers = settings.urgency.markers
    return {
        "greeting_name": _one_line(recipient.name)[:_MAX_DISPLAY_NAME] or "there",
        "reference": facts.reference,
        "subject": _one_line(facts.subject) or "(no subject)",
        "priority_label": f"{int(facts.priority)} ({PRIORITY_NAMES[int(facts.priority)]})",
        "request_type_label": REQUEST_TYPE_LABELS[facts.request_type],
        "due": format_due(facts.due_at, zone),
        "phone_lines": "\n".join(f"  {p.label}: {p.number}" for p in settings.escalation.phones),
        "markers": _one_of(markers),
        "urgent_target": format_duration(timedelta(minutes=settings.targets.priority_1_minutes)),
        "support_name": settings.support.name,
    }


def _one_of(words: tuple[str, ...]) -> str:
    quoted = [f'"{w}"' for w in words]
    if len(quoted) == 1:
        return quoted[0]
    return "one of " + ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _header_address(address: Address) -> HeaderAddress:
    name = _one_line(address.name)[:_MAX_DISPLAY_NAME]
    local, _, domain = address.address.rpartition("@")
    return HeaderAddress(display_name=name, username=local, domain=domain)


def _one_line(text: str) -> str:
    """Control characters (CR and LF among them) become spaces: nothing can add a header."""
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", text)).strip()
