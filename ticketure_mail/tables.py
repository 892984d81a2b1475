"""The database tables, as SQLModel classes; times are stored as UTC on every backend."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    Index,
    LargeBinary,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapper
from pydantic_core import PydanticUndefined
from sqlmodel import Field, SQLModel

from .clock import as_utc


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out. SQLite keeps no zone, so it gets naive UTC; PostgreSQL gets
    an aware value for its timestamptz (a naive one would be read in the session's zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


MESSAGE_ID_LENGTH = 998


def _fit_strings(_mapper: Any, _connection: Any, row: object) -> None:
    """Every string written fits its column on every backend. Mail supplies the values, and
    PostgreSQL refuses NUL and over-long values that SQLite takes: such a refusal must never
    park a valid request, nor fail to record a quarantine. Cutting an over-long value (a
    400-character address, a 1,500-character Message-ID) loses nothing anyone could use;
    lookups cut their keys the same way (see ``fit``)."""
    if not isinstance(row, SQLModel):
        return
    for column in row.__table__.columns:  # type: ignore[attr-defined]
        value = getattr(row, column.key, None)
        if isinstance(value, str):
            # SQLModel's AutoString wraps String: read the length, whatever the type's class.
            fitted = fit(value, getattr(column.type, "length", None))
            if fitted is not value:
                setattr(row, column.key, fitted)


def fit(value: str, length: int | None) -> str:
    """A string without NUL, cut to a column's length (None: unlimited)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if length is not None and len(value) > length:
        value = value[:length]
    return value


def insert_values(model: type[SQLModel], values: dict[str, Any]) -> dict[str, Any]:
    """One row of ``model``'s table for a Core insert: the model's defaults for the columns not
    given, every string fitted as ``_fit_strings`` does for ORM writes. Storing a message writes
    with Core: building the ORM objects and flushing them was most of its cost."""
    defaults, lengths = _table_shape(model)
    return fitted(model, {**defaults, **values}, lengths)


def fitted(model: type[SQLModel], values: dict[str, Any], lengths: dict[str, int | None] | None = None) -> dict[str, Any]:
    """``values`` for ``model``'s table with every string fitted to its column (for a Core update)."""
    lengths = lengths if lengths is not None else _table_shape(model)[1]
    return {k: fit(v, lengths[k]) if isinstance(v, str) else v for k, v in values.items()}


@functools.cache
def _table_shape(model: type[SQLModel]) -> tuple[dict[str, Any], dict[str, int | None]]:
    """(defaults of the model's fields, length of each column) for ``insert_values``."""
    defaults: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name == "id":
            continue
        if info.default_factory is not None:
            raise TypeError(f"{model.__name__}.{name}: a default factory cannot be shared between rows")
        if info.default is not PydanticUndefined:
            defaults[name] = info.default
    columns = model.__table__.columns  # type: ignore[attr-defined]
    return defaults, {c.key: getattr(c.type, "length", None) for c in columns}


def _time(nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UtcDateTime(), nullable=nullable, index=index))


def _text(nullable: bool = False) -> Any:
    return Field(sa_column=Column(Text, nullable=nullable), default=None if nullable else "")


def _blob(nullable: bool = True) -> Any:
    return Field(sa_column=Column(LargeBinary, nullable=nullable), default=None)


class TicketRow(SQLModel, table=True):
    __tablename__ = "ticket"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=40, unique=True, index=True)
    subject: str = _text()
    requester: str = Field(max_length=320, index=True)
    requester_name: str = _text()
    priority: int
    request_type: str = Field(max_length=40)
    status: str = Field(default="open", max_length=20, index=True)
    urgency_marker: str | None = Field(default=None, max_length=100)
    received_at: datetime = _time()
    due_at: datetime = _time(index=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()
    # The request type rule that matched (request_types.py); None for no match, urgency, or staff's choice.
    type_rule: str | None = Field(default=None, max_length=100)
    # Set when staff decide the priority (tickets set-priority): the deadline then follows the priority.
    priority_set_by: str | None = Field(default=None, max_length=200)
    priority_set_at: datetime | None = _time(nullable=True)
    # The first response stops the response clock: no alerts after it.
    first_response_at: datetime | None = _time(nullable=True, index=True)
    first_response_by: str | None = Field(default=None, max_length=320)
    closed_at: datetime | None = _time(nullable=True)


class MessageRow(SQLModel, table=True):
    """One mail in a ticket's history: the request, a follow-up, an automatic note, or ours."""

    __tablename__ = "ticket_message"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    direction: str = Field(max_length=10)  # inbound | outbound
    kind: str = Field(max_length=20)  # request | followup | note | acknowledgement
    message_id: str | None = Field(default=None, max_length=MESSAGE_ID_LENGTH, index=True)
    subject: str = _text()
    from_address: str = Field(default="", max_length=320)
    received_at: datetime = _time()
    body_text: str = _text()
    body_html: str | None = _text(nullable=True)
    raw: bytes | None = _blob()
    source: str = Field(default="", max_length=400)
    # The conversation block of an Outlook Thread-Index, hex; see decisions.thread_index_root.
    thread_root: str | None = Field(default=None, max_length=64, index=True)
    # Whether the sender had taken part in the ticket when this arrived. Only such senders
    # count as participants later: joining by a known Message-ID does not make one.
    from_participant: bool = True


class AttachmentRow(SQLModel, table=True):
    __tablename__ = "attachment"

    id: int | None = Field(default=None, primary_key=True)
    message_row_id: int = Field(foreign_key="ticket_message.id", index=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    size: int
    data: bytes | None = _blob()


class LedgerRow(SQLModel, table=True):
    """Every message ever processed, keyed so that the same message is never processed twice."""

    __tablename__ = "processed_message"

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=1000, unique=True)
    message_id: str | None = Field(default=None, max_length=MESSAGE_ID_LENGTH)
    outcome: str = Field(max_length=20)
    reason: str = _text()
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    source: str = Field(default="", max_length=400)
    processed_at: datetime = _time()


class OutboxRow(SQLModel, table=True):
    """Mail waiting to be sent, written in the same transaction as the ticket it belongs to."""

    __tablename__ = "outbox"
    # The sender takes the oldest due rows a few at a time: read in this order from the index,
    # not found by status and then sorted, which after an outage meant every pending row per claim.
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    kind: str = Field(max_length=20)
    message_id: str = Field(max_length=MESSAGE_ID_LENGTH, unique=True)
    recipient: str = Field(max_length=320)
    # senders.address_key(recipient): one spelling per mailbox, for the per-recipient rate limit
    # (SQL lower() folds only ASCII on SQLite, so the key is made in Python).
    recipient_key: str = Field(default="", max_length=320, index=True)
    envelope_sender: str = Field(default="", max_length=320)
    subject: str = _text()
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="pending", max_length=20, index=True)  # pending | sent | failed
    attempts: int = 0
    next_attempt_at: datetime = _time(index=True)
    give_up_at: datetime = _time()
    last_error: str = _text()
    created_at: datetime = _time()
    sent_at: datetime | None = _time(nullable=True)
    # While a sender holds the row: no other sender (a second daemon, a cron "poll --once")
    # takes it before this time. A sender that dies lets the lease run out, then it is retried.
    claimed_until: datetime | None = _time(nullable=True)
    # "host:pid:run" of the claiming sender, so a restarted daemon can take back at once what a
    # dead process on the same host held, instead of waiting for the lease.
    claimed_by: str = Field(default="", max_length=200)


# The per-sender acknowledgement limit counts recent mail to an address in any letter case;
# without this index every incoming message read the whole outbox.


class QuarantineRow(SQLModel, table=True):
    """A message that could not be processed, kept with its reason until an admin retries it."""

    __tablename__ = "quarantine"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(default="", max_length=400)
    folder: str = Field(default="", max_length=400)
    uidvalidity: int | None = None
    uid: int | None = None
    message_id: str | None = Field(default=None, max_length=MESSAGE_ID_LENGTH)
    subject: str = _text()
    from_address: str = Field(default="", max_length=320)
    reason: str = _text()
    size: int = 0
    raw: bytes | None = _blob()
    received_at: datetime = _time()
    status: str = Field(default="held", max_length=20, index=True)  # held | released
    created_at: datetime = _time()
    released_at: datetime | None = _time(nullable=True)


class MailboxStateRow(SQLModel, table=True):
    """How far the daemon has read a folder, per UIDVALIDITY (a new one means new UIDs)."""

    __tablename__ = "mailbox_state"
    __table_args__ = (UniqueConstraint("folder", "uidvalidity"),)

    id: int | None = Field(default=None, primary_key=True)
    folder: str = Field(max_length=400)
    uidvalidity: int
    last_uid: int = 0


class TicketEventRow(SQLModel, table=True):
    """Who changed what on a ticket, and when: triage, responses and closing by staff, reopening by the client."""

    __tablename__ = "ticket_event"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    at: datetime = _time()
    by: str = Field(max_length=200)
    action: str = Field(max_length=40)  # set-priority | set-type | respond | close | reopen
    detail: str = _text()


class AlertRow(SQLModel, table=True):
    """A deadline alert that was raised: at most one per ticket, stage and deadline, so a
    restart or a second daemon never raises it again, and a moved deadline re-arms both stages."""

    __tablename__ = "deadline_alert"
    __table_args__ = (UniqueConstraint("ticket_id", "stage", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    stage: str = Field(max_length=20)  # due_soon | breached
    due_at: datetime = _time()
    created_at: datetime = _time()
    # "" when no alert address is configured: the alert was only logged.
    recipient: str = Field(default="", max_length=320)
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")


# On every mapper, so every table, present and future, is covered (a listener on the SQLModel
# base does not reach classes mapped before it was added).
event.listen(Mapper, "before_insert", _fit_strings)
event.listen(Mapper, "before_update", _fit_strings)
