"""Value types shared by the pure core and the I/O shell: what a message is, what became of it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from .clock import iso_utc


class Address(NamedTuple):
    """One mailbox: a decoded display name and a bare address (``local@domain``)."""

    name: str
    address: str


@dataclass(frozen=True)
class Attachment:
    """A file the sender attached, with a name already made safe to show and to store."""

    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ParsedMail:
    """Everything the daemon needs from one raw message, decoded into plain Python values.

    Text values never contain NUL bytes; ``subject`` never contains CR, LF or other control
    characters (they are replaced by one space), so it is safe to echo into an outgoing header.
    Message-IDs are kept bare: no angle brackets, no surrounding whitespace.
    """

    message_id: str | None
    subject: str
    from_address: Address | None
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    sender: Address | None = None
    # None when the header is absent, "" for the null reverse path ``Return-Path: <>``.
    return_path: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    date: datetime | None = None
    body_text: str = ""
    body_html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # Lower-cased header name -> every value of that header, decoded, in message order.
    headers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # multipart/report; report-type=delivery-status (RFC 3464).
    is_delivery_report: bool = False
    # Message-IDs of the original message a delivery report is about, bare.
    reported_message_ids: tuple[str, ...] = ()
    # A content hash that identifies the message when it has no Message-ID.
    content_digest: str = ""
    defects: tuple[str, ...] = ()

    def header(self, name: str) -> str:
        """The first value of a header, or "" when the message does not have it."""
        values = self.headers.get(name.lower(), ())
        return values[0] if values else ""


class Outcome(enum.StrEnum):
    """Where a processed message ended; every message ends in exactly one of these."""

    CREATED = "created"
    THREADED = "threaded"
    DUPLICATE = "duplicate"
    DISCARDED = "discarded"
    QUARANTINED = "quarantined"


class RequestType(enum.StrEnum):
    """The kinds of request the support terms distinguish."""

    STANDARD = "standard"
    URGENT = "urgent"
    WEB_REFINEMENT = "web_refinement"
    PRODUCT_FEEDBACK = "product_feedback"
    API_REQUEST = "api_request"


class Priority(enum.IntEnum):
    URGENT = 1
    HIGH = 2
    NORMAL = 3
    LOW = 4


@dataclass(frozen=True)
class ProcessResult:
    """What became of one message: the line the daemon logs and ``ingest --json`` prints."""

    outcome: Outcome
    reason: str = ""
    ticket: str | None = None
    priority: int | None = None
    request_type: str | None = None
    # The request type rule that matched (request_types.py), if one did.
    type_rule: str | None = None
    subject: str = ""
    from_address: str = ""
    due_at: datetime | None = None
    ack: bool = False
    message_id: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "outcome": self.outcome.value,
            "ticket": self.ticket,
            "priority": self.priority,
            "request_type": self.request_type,
            "type_rule": self.type_rule,
            "subject": self.subject,
            "from": self.from_address,
            "due_at": iso_utc(self.due_at) if self.due_at else None,
            "ack": self.ack,
            "reason": self.reason,
            "message_id": self.message_id,
        }
