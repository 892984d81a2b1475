"""Builds the deadline alert staff receive, as bytes ready for the outbox; pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Literal

from . import mime_writer
from .acknowledgement import PRIORITY_NAMES, REQUEST_TYPE_LABELS, OutgoingMail, format_due, robot_headers
from .config import Settings
from .model import RequestType

AlertStage = Literal["due_soon", "breached"]
_MAX_SUBJECT = 160


@dataclass(frozen=True)
class AlertFacts:
    """What an alert says about its ticket."""

    reference: str
    subject: str
    requester: str
    priority: int
    request_type: str
    received_at: datetime
    due_at: datetime
    stage: AlertStage


def build_alert(facts: AlertFacts, settings: Settings, message_id: str, now: datetime) -> OutgoingMail:
    """The alert for one ticket and stage, to the configured staff address."""
    zone = settings.timezone
    local_due = facts.due_at.astimezone(zone)
    topic = " ".join(facts.subject.split())[:_MAX_SUBJECT] or "(no subject)"
    if facts.stage == "breached":
        headline = f"deadline missed {local_due:%a %H:%M %Z}"
        status = f"Its first response was due {format_due(facts.due_at, zone)}: {_ago(now - facts.due_at)} ago."
    else:
        headline = f"due {local_due:%a %H:%M %Z}"
        status = f"Its first response is due {format_due(facts.due_at, zone)}: in {_ago(facts.due_at - now)}."
    subject = f"[{facts.reference}] P{facts.priority} {headline}: {topic}"
    label = REQUEST_TYPE_LABELS.get(RequestType(facts.request_type), facts.request_type)
    body = "\n".join(
        [
            f"Ticket {facts.reference} has no first response yet.",
            status,
            "",
            f"  Subject:      {topic}",
            f"  Requester:    {facts.requester}",
            f"  Priority:     {facts.priority} ({PRIORITY_NAMES.get(facts.priority, '?')})",
            f"  Request type: {label}",
            f"  Received:     {format_due(facts.received_at, zone)}",
            "",
            "Answer the client from a staff address with"
            f" [{facts.reference}] in the subject, or record a response given",
            f"another way with: ticketure-mail tickets respond {facts.reference}",
            "",
            f"{settings.support.name} deadline watcher",
            "",
        ]
    )
    headers = [
        ("From", mime_writer.address(settings.smtp.from_name, settings.smtp.from_address, utf8=False)),
        ("To", mime_writer.address("", settings.watcher.alert_address, utf8=False)),
        # Replies stay among staff: one sent to the support mailbox would join the ticket as a response.
        ("Reply-To", mime_writer.address("", settings.watcher.alert_address, utf8=False)),
        ("Subject", mime_writer.unstructured(subject, "Subject", utf8=False)),
        ("Date", format_datetime(now)),
        ("Message-ID", f"<{message_id}>"),
        *robot_headers("auto-generated", settings, facts.reference),
    ]
    return OutgoingMail(
        message_id=message_id,
        recipient=settings.watcher.alert_address,
        envelope_sender=settings.smtp.envelope_sender,
        subject=subject,
        data=mime_writer.render(headers, body),
    )


def _ago(delta: timedelta) -> str:
    """A short span as a person reads it: "7 minutes", "3 h 05 min", "2 days 4 h"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h"
