"""Builds the acknowledgement a client receives, as bytes ready for the outbox; pure."""

from __future__ import annotations

import functools
import re
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from . import ack_templates, mime_writer
from .config import WEEKDAY_NAMES, CalendarSettings, Settings, config_dir, parse_duration
from .deadlines import Target, policy_from_settings
from .loops import LOOP_HEADER
from .mime_writer import one_line
from .model import Address, ParsedMail, Priority, RequestType
from .subjects import reference_pattern, strip_reply_prefixes

AckKind = Literal["standard", "urgent", "escalated"]

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


@dataclass(frozen=True)
class TicketFacts:
    """What an acknowledgement says about its ticket."""

    reference: str
    subject: str
    priority: Priority
    request_type: RequestType
    due_at: datetime
    # Whether staff set the priority; it decides which target the deadline was counted on.
    triaged: bool = False


@dataclass(frozen=True)
class OutgoingMail:
    """A message ready to hand to SMTP."""

    message_id: str  # bare, without angle brackets
    recipient: str
    envelope_sender: str  # "" for the null sender
    subject: str
    data: bytes


def load_templates(settings: Settings | None = None) -> dict[str, string.Template]:
    """The acknowledgement texts the settings name (the built-in ones without settings), by
    template name; raises ConfigError for a missing file or an unknown placeholder."""
    if settings is None:
        return ack_templates.load_templates({}, Path.cwd(), "<built-in>")
    return ack_templates.load_templates(
        {name: getattr(settings.templates, name) for name in ack_templates.TEMPLATE_NAMES},
        config_dir(settings),
        settings.source,
    )


def template_name(kind: AckKind, request_type: RequestType) -> str:
    """Which text answers: urgency has its own two; any other acknowledgement speaks to the
    request type (an urgent ticket's follow-up acknowledgement uses the standard text)."""
    if kind != "standard":
        return kind
    if request_type == RequestType.URGENT:
        return "standard"
    return request_type.value


def new_message_id(domain: str) -> str:
    """A globally unique Message-ID for mail we send, bare."""
    return f"ticketure.{uuid.uuid4().hex}@{domain}"


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
    templates: dict[str, string.Template],
    message_id: str,
    now: datetime,
) -> OutgoingMail:
    """The acknowledgement for one ticket, answering one inbound message."""
    subject = ack_subject(facts.reference, facts.subject, settings.support.reference_prefix)
    body = templates[template_name(kind, facts.request_type)].substitute(
        _placeholder_values(facts, recipient, settings)
    )

    # A recipient address outside ASCII can only go out as SMTPUTF8, with UTF-8 headers.
    utf8 = not recipient.address.isascii()
    headers = [
        ("From", mime_writer.address(settings.smtp.from_name, settings.smtp.from_address, utf8)),
        ("To", mime_writer.address(one_line(recipient.name)[:_MAX_DISPLAY_NAME], recipient.address, utf8)),
        ("Subject", mime_writer.unstructured(subject, "Subject", utf8)),
        ("Date", format_datetime(now)),
        ("Message-ID", f"<{message_id}>"),
    ]
    if mail.message_id:
        chain = [*mail.references, mail.message_id]
        if len(chain) > _MAX_REFERENCES:
            chain = [chain[0], *chain[-(_MAX_REFERENCES - 1) :]]
        headers += [("In-Reply-To", mime_writer.message_id_list([mail.message_id])),
                    ("References", mime_writer.message_id_list(chain))]
    headers += robot_headers("auto-replied", settings, facts.reference)
    return OutgoingMail(
        message_id=message_id,
        recipient=recipient.address,
        envelope_sender=settings.smtp.envelope_sender,
        subject=subject,
        data=mime_writer.render(headers, body, utf8),
    )


def robot_headers(auto_submitted: str, settings: Settings, reference: str) -> list[tuple[str, str]]:
    """The headers that keep robots (ours included) from answering mail we send (RFC 3834)."""
    return [
        ("Auto-Submitted", auto_submitted),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Loop", settings.support.address),
        (LOOP_HEADER, reference),
    ]


def ack_subject(reference: str, subject: str, prefix: str) -> str:
    """``[REF] subject``, with reply prefixes and any earlier reference removed."""
    bare = strip_reply_prefixes(one_line(subject))
    bare = reference_pattern(prefix).sub("", bare)
    bare = re.sub(r"\[\s*\]", "", bare)
    bare = re.sub(r"\s+", " ", bare).strip()
    if len(bare) > _MAX_SUBJECT:
        bare = bare[: _MAX_SUBJECT - 1].rstrip() + "…"
    return f"[{reference}] {bare or '(no subject)'}"


def _placeholder_values(facts: TicketFacts, recipient: Address, settings: Settings) -> dict[str, str]:
    return {
        **_settings_values(settings),
        "greeting_name": one_line(recipient.name)[:_MAX_DISPLAY_NAME] or "there",
        "reference": facts.reference,
        "subject": one_line(facts.subject) or "(no subject)",
        "priority_label": f"{int(facts.priority)} ({PRIORITY_NAMES[int(facts.priority)]})",
        "request_type_label": REQUEST_TYPE_LABELS[facts.request_type],
        "due": format_due(facts.due_at, ZoneInfo(settings.calendar.timezone)),
        "target": _target_text(settings, facts.priority, facts.request_type, facts.triaged),
    }


@functools.lru_cache(maxsize=8)
def _settings_values(settings: Settings) -> dict[str, str]:
    """The placeholders that depend on the settings alone, worked out once per settings."""
    return {
        "phone_lines": "\n".join(f"  {p.label}: {p.number}" for p in settings.escalation.phones),
        "markers": _one_of(settings.urgency.markers),
        "urgent_target": format_duration(parse_duration(settings.targets.priority_1.within)),
        "business_hours": describe_calendar(settings.calendar),
        "support_name": settings.support.name,
    }


@functools.lru_cache(maxsize=64)
def _target_text(settings: Settings, priority: Priority, request_type: RequestType, triaged: bool) -> str:
    target = policy_from_settings(settings).target_for(priority, request_type, triaged=triaged)
    return describe_target(target, settings.calendar)


def describe_target(target: Target, calendar: CalendarSettings) -> str:
    """"15 minutes, around the clock" or "24 hours of business time (Monday to Friday ...)"."""
    if target.clock == "24x7":
        return f"{format_duration(target.duration)}, around the clock"
    # Open hours, never days: "1 day of business time" would read as one working day.
    hours, minutes = divmod(int(target.duration.total_seconds() // 60), 60)
    parts = [f"{hours} hour{'s' if hours != 1 else ''}" if hours else "", f"{minutes} minutes" if minutes else ""]
    amount = " ".join(p for p in parts if p)
    return f"{amount} of business time ({describe_calendar(calendar)})"


def describe_calendar(calendar: CalendarSettings) -> str:
    """When the business clock runs, in words: days, hours, zone and holidays."""
    days = [d for d in WEEKDAY_NAMES if d in calendar.working_days]
    hours = {d: _hours_text(getattr(calendar.opening_hours, d)) for d in days}
    if len(set(hours.values())) == 1:
        text = f"{_day_span(days)}, {next(iter(hours.values()))}"
    else:
        text = ", ".join(f"{_DAY_WORDS[d]} {h}" for d, h in hours.items())
    text += f", {calendar.timezone} time"
    if calendar.holidays or calendar.holiday_country:
        text += ", except holidays"
    return text


_DAY_WORDS = dict(zip(WEEKDAY_NAMES, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")))


def _hours_text(times: tuple[str, ...]) -> str:
    if not times:
        return "all day"
    return " and ".join(f"{a}-{b}" for a, b in zip(times[0::2], times[1::2]))


def _day_span(days: list[str]) -> str:
    indexes = [WEEKDAY_NAMES.index(d) for d in days]
    if len(days) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{_DAY_WORDS[days[0]]} to {_DAY_WORDS[days[-1]]}"
    words = [_DAY_WORDS[d] for d in days]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _one_of(words: tuple[str, ...]) -> str:
    quoted = [f'"{w}"' for w in words]
    if len(quoted) == 1:
        return quoted[0]
    return "one of " + ", ".join(quoted[:-1]) + " or " + quoted[-1]
