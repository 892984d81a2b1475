"""The database: applies each message's plan in one transaction and answers the questions asked of it."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, and_, bindparam, event, func, insert, or_, true, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.schema import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine, select

from .acknowledgement import OutgoingMail, TicketFacts
from .decisions import Plan, Source, ThreadCandidate, same_conversation_subject, thread_index_root
from .model import Attachment, ParsedMail, Priority, ProcessResult, RequestType
from . import schema
from .schema import SchemaState
from .clock import as_utc, iso_utc
from .senders import address_key
from .subjects import find_reference, format_reference
from .tables import (
    MESSAGE_ID_LENGTH,
    AlertRow,
    AttachmentRow,
    LedgerRow,
    MailboxStateRow,
    MessageRow,
    OutboxRow,
    QuarantineRow,
    TicketEventRow,
    TicketRow,
    fit,
    fitted,
    insert_values,
)

log = logging.getLogger(__name__)

AckFactory = Callable[[Plan, TicketFacts], OutgoingMail]
# Changes a ticket in place inside a transaction; returns the event to record, or None when
# there is nothing to change (see triage.py).
TicketChange = Callable[[TicketRow], "TicketEvent | None"]

# A waiting writer retries for this long before SQLite gives up with "database is locked".
_SQLITE_BUSY_TIMEOUT_MS = 15_000
_THREAD_LOOKUP_LIMIT = 50

# The statements run for every message, built once: on SQLite, building a statement and
# computing its cache key cost more than running it.
_LEDGER: Table = LedgerRow.__table__  # type: ignore[attr-defined]
_TICKETS: Table = TicketRow.__table__  # type: ignore[attr-defined]
_MESSAGES: Table = MessageRow.__table__  # type: ignore[attr-defined]
_OUTBOX: Table = OutboxRow.__table__  # type: ignore[attr-defined]
_IS_PROCESSED = select(_LEDGER.c.id).where(_LEDGER.c.dedupe_key == bindparam("key")).limit(1)
_TICKET_BY_MESSAGE_ID = (
    select(_MESSAGES.c.ticket_id).where(_MESSAGES.c.message_id.in_(bindparam("ids", expanding=True))).limit(1)
)
_TICKET_BY_OUTBOX_MESSAGE_ID = (
    select(_OUTBOX.c.ticket_id)
    .where(_OUTBOX.c.message_id.in_(bindparam("ids", expanding=True)), _OUTBOX.c.ticket_id.is_not(None))
    .limit(1)
)
_TICKETS_BY_THREAD_ROOT = (
    select(_MESSAGES.c.ticket_id, _TICKETS.c.subject)
    .join(_TICKETS, _TICKETS.c.id == _MESSAGES.c.ticket_id)
    .where(_MESSAGES.c.thread_root == bindparam("root"), _MESSAGES.c.from_address == bindparam("sender"))
    .limit(_THREAD_LOOKUP_LIMIT)
)
_TICKET_BY_REFERENCE = select(_TICKETS.c.id).where(_TICKETS.c.reference == bindparam("reference"))
_CANDIDATE = select(
    _TICKETS.c.reference, _TICKETS.c.priority, _TICKETS.c.request_type, _TICKETS.c.requester,
    _TICKETS.c.first_response_at, _TICKETS.c.status, _TICKETS.c.priority_set_at,
).where(_TICKETS.c.id == bindparam("ticket_id"))
_PARTICIPANTS = select(_MESSAGES.c.from_address).where(
    _MESSAGES.c.ticket_id == bindparam("ticket_id"),
    _MESSAGES.c.direction == "inbound",
    _MESSAGES.c.from_participant == True,  # noqa: E712 - SQL, not Python
)
_JOINED_TICKET = select(
    _TICKETS.c.reference, _TICKETS.c.subject, _TICKETS.c.priority, _TICKETS.c.request_type, _TICKETS.c.type_rule,
    _TICKETS.c.due_at, _TICKETS.c.priority_set_at, _TICKETS.c.first_response_at, _TICKETS.c.first_response_by,
).where(_TICKETS.c.id == bindparam("ticket_id"))
# The columns to set come with the parameters.
_UPDATE_TICKET = update(_TICKETS).where(_TICKETS.c.id == bindparam("ticket_row_id"))
_DUE_OUTBOX = (
    select(_OUTBOX)
    .where(
        _OUTBOX.c.status == "pending",
        _OUTBOX.c.next_attempt_at <= bindparam("now"),
        or_(_OUTBOX.c.claimed_until.is_(None), _OUTBOX.c.claimed_until <= bindparam("now")),
    )
    .order_by(_OUTBOX.c.next_attempt_at, _OUTBOX.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_CLAIM_OUTBOX = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(claimed_until=bindparam("until"), claimed_by=bindparam("owner"))
)
_RENEW_CLAIMS = (
    update(_OUTBOX)
    .where(
        _OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
        _OUTBOX.c.claimed_by == bindparam("owner"),
        _OUTBOX.c.status == "pending",
    )
    .values(claimed_until=bindparam("until"))
    .returning(_OUTBOX.c.id)
)
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row_id"))
    .values(attempts=_OUTBOX.c.attempts + 1, status="sent", sent_at=bindparam("sent"), last_error="",
            claimed_until=None, claimed_by="")
)
_RECENT_ACKS = select(_OUTBOX.c.created_at).where(
    _OUTBOX.c.recipient_key == bindparam("key"), _OUTBOX.c.created_at > bindparam("since")
)


class DuplicateMessage(Exception):
    """Another transaction recorded the same message first (two pollers, one message)."""


@dataclass(frozen=True)
class TicketEvent:
    """A change made to a ticket by hand, as the ticket's history shows it."""

    action: str
    by: str
    detail: str


@dataclass(frozen=True)
class OutboxItem:
    id: int
    ticket_id: int | None
    kind: str
    message_id: str
    recipient: str
    envelope_sender: str
    subject: str
    data: bytes
    status: str
    attempts: int
    next_attempt_at: datetime
    give_up_at: datetime
    last_error: str
    created_at: datetime
    sent_at: datetime | None


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs to be safe under a long-running daemon."""
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000},
            poolclass=StaticPool if in_memory else None,
        )
        _configure_sqlite(engine, wal=not in_memory)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _configure_sqlite(engine: Engine, wal: bool) -> None:
    # pysqlite's own transaction handling starts transactions late (and not at all for reads),
    # so a reader that later writes fails at once with "database is locked" instead of waiting.
    # Take the transaction handling over and begin every transaction IMMEDIATE.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if wal:
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL journal mode (kept %s); concurrent readers will wait", mode)
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """All reads and writes of tickets, the dedupe ledger, the outbox and the quarantine."""

    def __init__(self, engine: Engine, reference_prefix: str, give_up_after: timedelta = timedelta(hours=48)) -> None:
        self.engine = engine
        self.reference_prefix = reference_prefix
        # How long a queued message may keep failing temporarily before it is marked failed.
        self.give_up_after = give_up_after
        # SQLite has one writer at a time, and a waiting writer polls with growing sleeps (1, 2,
        # 5 ... ms). The daemon's threads (poll cycle, sender, watcher) take turns here instead;
        # other processes still meet the busy timeout.
        self._writer: AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    @classmethod
    def from_url(cls, url: str, reference_prefix: str, give_up_after: timedelta = timedelta(hours=48)) -> Store:
        return cls(make_engine(url), reference_prefix, give_up_after)

    def upgrade_schema(self) -> SchemaState:
        """Create the schema in an empty database, or bring an older one up to date (schema.py)."""
        with self._writer:
            return schema.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._writer, Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A transaction on a bare connection, for the statements that need no ORM session."""
        with self._writer, self.engine.begin() as c:
            yield c

    @contextmanager
    def _within(self, session: Session | None) -> Iterator[Session]:
        """The caller's transaction when it gives one, else a transaction of its own."""
        if session is not None:
            yield session
            return
        with self.transaction() as s:
            yield s

    # --- processing --------------------------------------------------------------------------

    def is_processed(self, dedupe_key: str, session: Session | None = None) -> bool:
        with self._within(session) as s:
            return s.connection().execute(_IS_PROCESSED, {"key": dedupe_key}).first() is not None

    def find_thread(self, mail: ParsedMail, session: Session | None = None) -> ThreadCandidate | None:
        """The ticket a message refers to, by its headers first and its subject second."""
        with self._within(session) as s:
            c = s.connection()
            by_header: list[tuple[str, tuple[str, ...]]] = [
                ("in-reply-to", mail.in_reply_to),
                ("references", tuple(reversed(mail.references))),
            ]
            if mail.is_delivery_report:
                by_header.append(("delivery-report", mail.reported_message_ids))
            for matched_by, ids in by_header:
                # Stored ids were cut to the column (tables.fit): cut the looked-up ones alike.
                wanted = [fit(i, MESSAGE_ID_LENGTH) for i in ids if i != mail.message_id][:_THREAD_LOOKUP_LIMIT]
                if not wanted:
                    continue
                ticket_id = c.execute(_TICKET_BY_MESSAGE_ID, {"ids": wanted}).scalar()
                if ticket_id is None:
                    ticket_id = c.execute(_TICKET_BY_OUTBOX_MESSAGE_ID, {"ids": wanted}).scalar()
                if ticket_id is not None:
                    return self._candidate(c, ticket_id, matched_by)
            root = thread_index_root(mail)
            sender = mail.from_address.address if mail.from_address else ""
            if root is not None and sender:
                rows = c.execute(_TICKETS_BY_THREAD_ROOT, {"root": root, "sender": fit(sender, 320)}).all()
                for ticket_id, subject in rows:
                    if same_conversation_subject(subject, mail.subject):
                        return self._candidate(c, ticket_id, "thread-index")
            reference = find_reference(mail.subject, self.reference_prefix)
            if reference is not None:
                ticket_id = c.execute(_TICKET_BY_REFERENCE, {"reference": reference}).scalar()
                if ticket_id is not None:
                    return self._candidate(c, ticket_id, "subject-reference")
        return None

    def _candidate(self, c: Connection, ticket_id: int, matched_by: Any) -> ThreadCandidate:
        ticket = c.execute(_CANDIDATE, {"ticket_id": ticket_id}).one()
        senders = c.execute(_PARTICIPANTS, {"ticket_id": ticket_id}).scalars()
        participants = frozenset(address_key(a) for a in (*senders, ticket.requester) if a)
        return ThreadCandidate(
            ticket_id=ticket_id,
            reference=ticket.reference,
            priority=Priority(ticket.priority),
            request_type=RequestType(ticket.request_type),
            requester=ticket.requester,
            participants=participants,
            matched_by=matched_by,
            first_response_at=ticket.first_response_at,
            closed=ticket.status == "closed",
            triaged=ticket.priority_set_at is not None,
        )

    def apply(
        self, plan: Plan, raw: bytes, now: datetime, ack_factory: AckFactory, session: Session | None = None
    ) -> ProcessResult:
        """Write the plan: ticket, message, ledger row and queued acknowledgement, all or nothing.

        Raises DuplicateMessage when another transaction recorded the same message first. In
        the caller's ``session`` it raises that transaction's IntegrityError instead: the
        transaction is spoilt and must end before the ledger can be asked (``is_duplicate``).
        """
        if session is not None:
            return self._apply(session, plan, raw, now, ack_factory)
        try:
            with self.transaction() as s:
                return self._apply(s, plan, raw, now, ack_factory)
        except IntegrityError as exc:
            if self.is_duplicate(plan.dedupe_key):
                raise DuplicateMessage(plan.dedupe_key) from exc
            raise

    def is_duplicate(self, key: str) -> bool:
        """After an IntegrityError: did another transaction record this message first?"""
        try:
            return self.is_processed(key)
        except Exception:  # the database may be what failed; let the original error speak
            return False

    def _apply(self, s: Session, plan: Plan, raw: bytes, now: datetime, ack_factory: AckFactory) -> ProcessResult:
        # Core statements on the session's connection: the ORM's unit of work cost more than
        # everything else in storing a message (see tables.insert_values).
        c = s.connection()
        mail = plan.mail
        ticket: _Ticket | None = None
        if plan.new_ticket is not None:
            ticket = self._insert_ticket(c, plan, now)
        elif plan.join_ticket is not None:
            ticket = self._update_joined_ticket(c, plan, now)

        if ticket is not None and plan.message_kind is not None:
            self._add_message(c, ticket.id, plan, raw)
        if ticket is not None and plan.ack_suppressed:
            _insert(c, MessageRow, ticket_id=ticket.id, direction="internal", kind="note",
                    subject="acknowledgement suppressed", received_at=now, body_text=plan.ack_suppressed,
                    source=plan.source.label())
        if plan.bounced_message_ids:
            self._record_bounce(s, plan)

        ack_sent = False
        if ticket is not None and plan.ack is not None and plan.ack_recipient is not None:
            outgoing = ack_factory(plan, ticket.facts)
            self._queue(c, ticket.id, plan.ack, outgoing, now)
            ack_sent = True

        _insert(c, LedgerRow, dedupe_key=plan.dedupe_key, message_id=mail.message_id, outcome=plan.outcome.value,
                reason=plan.reason, ticket_id=ticket.id if ticket is not None else None, source=plan.source.label(),
                processed_at=now)
        facts = ticket.facts if ticket is not None else None
        return ProcessResult(
            outcome=plan.outcome,
            reason=plan.reason,
            ticket=facts.reference if facts is not None else None,
            priority=int(facts.priority) if facts is not None else None,
            request_type=facts.request_type.value if facts is not None else None,
            type_rule=ticket.type_rule if ticket is not None else None,
            subject=mail.subject,
            from_address=mail.from_address.address if mail.from_address else "",
            due_at=facts.due_at if facts is not None else None,
            ack=ack_sent,
            message_id=mail.message_id,
        )

    def _insert_ticket(self, c: Connection, plan: Plan, now: datetime) -> _Ticket:
        nt = plan.new_ticket
        assert nt is not None
        values = insert_values(TicketRow, dict(
            # A unique placeholder until the row has the id the reference is made from.
            reference=f"new-{uuid.uuid4().hex}",
            subject=nt.subject,
            requester=nt.requester.address,
            requester_name=nt.requester.name,
            priority=int(nt.priority),
            request_type=nt.request_type.value,
            urgency_marker=nt.urgency_marker,
            type_rule=nt.type_rule,
            received_at=plan.received_at,
            due_at=nt.due_at,
            created_at=now,
            updated_at=now,
        ))
        ticket_id = int(c.execute(_insert_statement(TicketRow), values).inserted_primary_key[0])
        reference = format_reference(self.reference_prefix, ticket_id)
        c.execute(_UPDATE_TICKET, {"ticket_row_id": ticket_id, "reference": reference})
        facts = TicketFacts(reference=reference, subject=values["subject"], priority=nt.priority,
                            request_type=nt.request_type, due_at=as_utc(nt.due_at), triaged=False)
        return _Ticket(ticket_id, facts, values["type_rule"])

    def _update_joined_ticket(self, c: Connection, plan: Plan, now: datetime) -> _Ticket:
        assert plan.join_ticket is not None
        ticket_id = plan.join_ticket.ticket_id
        row = c.execute(_JOINED_TICKET, {"ticket_id": ticket_id}).one()
        changes: dict[str, Any] = {"updated_at": now}
        priority, request_type, due_at = Priority(row.priority), RequestType(row.request_type), row.due_at
        if plan.reopening is not None:
            due_at = plan.reopening.due_at
            changes.update(status="open", closed_at=None, due_at=due_at, first_response_at=None,
                           first_response_by=None)
            earlier = (f"; the earlier first response, at {iso_utc(row.first_response_at)} by {row.first_response_by},"
                       " is kept here" if row.first_response_at is not None else "")
            _insert(c, TicketEventRow, ticket_id=ticket_id, at=now, by=plan.reopening.by, action="reopen",
                    detail=f"reopened by the client's message; response due {iso_utc(due_at)}{earlier}")
        if plan.escalation is not None:
            priority, request_type, due_at = Priority.URGENT, RequestType.URGENT, plan.escalation.due_at
            changes.update(priority=int(priority), request_type=request_type.value,
                           urgency_marker=plan.escalation.urgency_marker, due_at=due_at)
        if plan.message_kind == "response" and row.first_response_at is None:
            changes.update(first_response_at=plan.received_at,
                           first_response_by=plan.mail.from_address.address if plan.mail.from_address else None)
        c.execute(_UPDATE_TICKET, {"ticket_row_id": ticket_id, **fitted(TicketRow, changes)})
        facts = TicketFacts(reference=row.reference, subject=row.subject, priority=priority,
                            request_type=request_type, due_at=as_utc(due_at), triaged=row.priority_set_at is not None)
        return _Ticket(ticket_id, facts, row.type_rule)

    def _record_bounce(self, s: Session, plan: Plan) -> None:
        rows = s.exec(
            select(OutboxRow).where(OutboxRow.message_id.in_(plan.bounced_message_ids[:_THREAD_LOOKUP_LIMIT]))  # type: ignore[attr-defined]
        ).all()
        for row in rows:
            row.status = "bounced"
            row.last_error = f"bounced: {plan.mail.subject or 'delivery status notification'}"[:2000]
            s.add(row)

    def recent_ack_times(self, recipient: str, since: datetime, session: Session | None = None) -> list[datetime]:
        """When acknowledgements to an address were queued since a time (for the rate limit)."""
        with self._within(session) as s:
            key = fit(address_key(recipient), 320)
            return list(s.connection().execute(_RECENT_ACKS, {"key": key, "since": since}).scalars())

    def _add_message(self, c: Connection, ticket_id: int, plan: Plan, raw: bytes) -> None:
        mail = plan.mail
        row_id = _insert(
            c, MessageRow,
            ticket_id=ticket_id,
            direction="inbound",
            kind=plan.message_kind or "request",
            message_id=mail.message_id,
            subject=mail.subject,
            from_address=mail.from_address.address if mail.from_address else "",
            received_at=plan.received_at,
            body_text=mail.body_text,
            body_html=mail.body_html,
            raw=raw,
            source=plan.source.label(),
            thread_root=thread_index_root(mail),
            from_participant=plan.from_participant,
        )
        dropped = {id(a) for a in plan.dropped_attachments}
        kept = [a for a in mail.attachments if id(a) not in dropped]
        if kept:
            c.execute(_insert_statement(AttachmentRow), [
                insert_values(AttachmentRow, dict(message_row_id=row_id, filename=a.filename,
                                                  content_type=a.content_type, size=a.size, data=a.data))
                for a in kept
            ])
        if plan.dropped_attachments:
            names = ", ".join(f"{a.filename} ({a.size} bytes)" for a in plan.dropped_attachments)
            _insert(c, MessageRow, ticket_id=ticket_id, direction="internal", kind="note",
                    subject="attachments not stored", received_at=plan.received_at, source=plan.source.label(),
                    body_text=f"Over attachments.max_bytes_per_message; kept in the raw message only: {names}")

    def _queue(self, c: Connection, ticket_id: int | None, kind: str, outgoing: OutgoingMail, now: datetime) -> int:
        """Put a message in the outbox, due now; its row id."""
        return _insert(
            c, OutboxRow,
            ticket_id=ticket_id,
            kind=kind,
            message_id=outgoing.message_id,
            recipient=outgoing.recipient,
            recipient_key=address_key(outgoing.recipient),
            envelope_sender=outgoing.envelope_sender,
            subject=outgoing.subject,
            data=outgoing.data,
            status="pending",
            next_attempt_at=now,
            give_up_at=now + self.give_up_after,
            created_at=now,
        )

    # --- quarantine --------------------------------------------------------------------------

    def quarantine(
        self,
        *,
        source: Source,
        reason: str,
        raw: bytes | None,
        size: int,
        received_at: datetime,
        now: datetime,
        mail: ParsedMail | None = None,
    ) -> int:
        with self.transaction() as s:
            # One entry per message: a retry that fails again, or a message quarantined again
            # after a crash kept it in the inbox, updates the entry it already has.
            held = self._held_entry(s, source)
            if held is not None:
                held.reason = reason
                held.created_at = now
                s.add(held)
                s.flush()
                assert held.id is not None
                return held.id
            row = QuarantineRow(
                source=source.label(),
                folder=source.folder,
                uidvalidity=source.uidvalidity,
                uid=source.uid,
                message_id=mail.message_id if mail else None,
                subject=mail.subject if mail else "",
                from_address=mail.from_address.address if mail and mail.from_address else "",
                reason=reason,
                size=size,
                raw=raw,
                received_at=received_at,
                created_at=now,
            )
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id

    @staticmethod
    def _held_entry(s: Session, source: Source) -> QuarantineRow | None:
        if source.quarantine_id is not None:
            query = select(QuarantineRow).where(QuarantineRow.id == source.quarantine_id)
        elif source.kind == "imap" and source.uid is not None:
            query = select(QuarantineRow).where(
                QuarantineRow.folder == fit(source.folder, 400),
                QuarantineRow.uidvalidity == source.uidvalidity,
                QuarantineRow.uid == source.uid,
            )
        else:
            return None
        return s.exec(query.where(QuarantineRow.status == "held").limit(1)).first()

    def held_quarantine(self) -> list[QuarantineRow]:
        with self.transaction() as s:
            return list(s.exec(select(QuarantineRow).where(QuarantineRow.status == "held").order_by(QuarantineRow.id)))

    def release_quarantine(self, row_id: int, now: datetime) -> None:
        with self.transaction() as s:
            row = s.get_one(QuarantineRow, row_id)
            row.status = "released"
            row.released_at = now
            s.add(row)

    # --- mailbox position --------------------------------------------------------------------

    def last_uid(self, folder: str, uidvalidity: int) -> int | None:
        with self.transaction() as s:
            row = s.exec(
                select(MailboxStateRow).where(MailboxStateRow.folder == folder, MailboxStateRow.uidvalidity == uidvalidity)
            ).first()
            return row.last_uid if row else None

    def set_last_uid(self, folder: str, uidvalidity: int, uid: int) -> None:
        with self.transaction() as s:
            row = s.exec(
                select(MailboxStateRow).where(MailboxStateRow.folder == folder, MailboxStateRow.uidvalidity == uidvalidity)
            ).first()
            if row is None:
                row = MailboxStateRow(folder=folder, uidvalidity=uidvalidity, last_uid=uid)
            else:
                row.last_uid = max(row.last_uid, uid)
            s.add(row)

    # --- outbox ------------------------------------------------------------------------------

    def due_outbox(self, now: datetime, limit: int = 100) -> list[OutboxItem]:
        with self.transaction() as s:
            rows = s.exec(
                select(OutboxRow)
                .where(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= now)
                .order_by(OutboxRow.next_attempt_at, OutboxRow.id)  # type: ignore[arg-type]
                .limit(limit)
            ).all()
            return [_outbox_item(r) for r in rows]

    def claim_due_outbox(self, now: datetime, limit: int, lease: timedelta, owner: str) -> list[OutboxItem]:
        """Take up to ``limit`` due rows for this sender alone until ``now + lease``.

        PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent senders get disjoint rows without
        waiting. SQLite: every transaction begins IMMEDIATE, so claims are serialised anyway.
        """
        with self._connection() as c:
            rows = c.execute(_DUE_OUTBOX, {"now": now, "limit": limit}).all()
            if rows:
                c.execute(_CLAIM_OUTBOX, {"ids": [r.id for r in rows], "until": now + lease, "owner": fit(owner, 200)})
            return [_outbox_item(r) for r in rows]

    def renew_claims(self, item_ids: Sequence[int], owner: str, until: datetime) -> set[int]:
        """Extend this owner's claims on these rows to ``until``; the ids it still held."""
        if not item_ids:
            return set()
        with self._connection() as c:
            rows = c.execute(_RENEW_CLAIMS, {"ids": list(item_ids), "owner": fit(owner, 200), "until": until}).all()
            return {int(r.id) for r in rows}

    def release_claims(self, item_ids: Sequence[int], error: str = "") -> None:
        """Give rows back unsent (the relay is down, a stop was asked for); ``error``, when
        given, is kept as their last error so that ``outbox list`` shows why they wait."""
        if not item_ids:
            return
        outbox = OutboxRow.__table__  # type: ignore[attr-defined]
        values: dict[str, Any] = {"claimed_until": None, "claimed_by": ""}
        if error:
            values["last_error"] = error[:2000]
        with self.transaction() as s:
            s.execute(
                update(outbox).where(outbox.c.id.in_(list(item_ids)), outbox.c.status == "pending").values(**values)
            )

    def claim_owners(self, owner_prefix: str) -> set[str]:
        """Distinct owners of live claims whose name starts with a prefix (a host's)."""
        with self.transaction() as s:
            rows = s.exec(
                select(OutboxRow.claimed_by).where(
                    OutboxRow.claimed_until != None,  # noqa: E711 - SQL
                    OutboxRow.claimed_by.startswith(owner_prefix),  # type: ignore[attr-defined]
                ).distinct()
            ).all()
            return set(rows)

    def release_claims_of(self, owners: Sequence[str]) -> int:
        """Give back every row claimed by these owners; how many there were."""
        if not owners:
            return 0
        outbox = OutboxRow.__table__  # type: ignore[attr-defined]
        with self.transaction() as s:
            result = s.execute(
                update(outbox)
                .where(outbox.c.claimed_by.in_(list(owners)), outbox.c.claimed_until != None)  # noqa: E711
                .values(claimed_until=None, claimed_by="")
            )
            return int(result.rowcount or 0)

    def outbox_items(self, statuses: Sequence[str] = ("pending", "failed")) -> list[OutboxItem]:
        with self.transaction() as s:
            rows = s.exec(
                select(OutboxRow).where(OutboxRow.status.in_(statuses)).order_by(OutboxRow.id)  # type: ignore[attr-defined]
            ).all()
            return [_outbox_item(r) for r in rows]

    def mark_sent(self, item: OutboxItem, now: datetime) -> None:
        """The relay took the message: the row is sent, and the ticket's history shows it."""
        # Two prepared statements in one short transaction: this runs once per message sent.
        with self._connection() as c:
            c.execute(_MARK_SENT, {"row_id": item.id, "sent": now})
            if item.ticket_id is not None:
                c.execute(_insert_statement(MessageRow), insert_values(MessageRow, dict(
                    ticket_id=item.ticket_id,
                    direction="outbound",
                    kind="alert" if item.kind == "alert" else "acknowledgement",
                    message_id=item.message_id,
                    subject=item.subject,
                    received_at=now,
                    source="outbox",
                )))

    def mark_retry(self, item_id: int, error: str, next_attempt_at: datetime) -> None:
        with self.transaction() as s:
            row = s.get_one(OutboxRow, item_id)
            row.attempts += 1
            row.last_error = error[:2000]
            row.next_attempt_at = next_attempt_at
            row.claimed_until = None
            s.add(row)

    def mark_failed(self, item_id: int, error: str) -> None:
        with self.transaction() as s:
            row = s.get_one(OutboxRow, item_id)
            row.attempts += 1
            row.status = "failed"
            row.claimed_until = None
            row.last_error = error[:2000]
            s.add(row)

    def requeue_outbox(self, item_id: int, now: datetime) -> bool:
        with self.transaction() as s:
            row = s.get(OutboxRow, item_id)
            if row is None or row.status != "failed":
                return False
            row.status = "pending"
            row.next_attempt_at = now
            row.claimed_until = None
            row.give_up_at = now + self.give_up_after
            s.add(row)
            return True

    # --- reading tickets ---------------------------------------------------------------------

    def tickets(self, limit: int = 1000) -> list[TicketRow]:
        with self.transaction() as s:
            return list(s.exec(select(TicketRow).order_by(TicketRow.id).limit(limit)))  # type: ignore[arg-type]

    def ticket(self, reference: str) -> TicketRow | None:
        canonical = find_reference(reference, self.reference_prefix) or reference
        with self.transaction() as s:
            return s.exec(select(TicketRow).where(TicketRow.reference == canonical)).first()

    def ticket_messages(self, ticket_id: int) -> list[tuple[MessageRow, list[AttachmentRow]]]:
        with self.transaction() as s:
            messages = s.exec(
                select(MessageRow).where(MessageRow.ticket_id == ticket_id).order_by(MessageRow.id)  # type: ignore[arg-type]
            ).all()
            result = []
            for m in messages:
                files = s.exec(
                    select(AttachmentRow).where(AttachmentRow.message_row_id == m.id).order_by(AttachmentRow.id)  # type: ignore[arg-type]
                ).all()
                result.append((m, list(files)))
            return result

    def counts(self) -> dict[str, int]:
        with self.transaction() as s:
            return {
                "tickets": s.exec(select(func.count()).select_from(TicketRow)).one(),
                "processed": s.exec(select(func.count()).select_from(LedgerRow)).one(),
                "outbox_pending": s.exec(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.status == "pending")
                ).one(),
                "outbox_failed": s.exec(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.status == "failed")
                ).one(),
                "quarantined": s.exec(
                    select(func.count()).select_from(QuarantineRow).where(QuarantineRow.status == "held")
                ).one(),
            }

    def find_tickets(
        self,
        *,
        status: str | None = None,
        priority: int | None = None,
        request_type: str | None = None,
        overdue_at: datetime | None = None,
        received_since: datetime | None = None,
        limit: int | None = None,
    ) -> list[TicketRow]:
        """Tickets by the filters given; ``overdue_at``: open, unanswered, due before that instant."""
        query = select(TicketRow)
        if status is not None:
            query = query.where(TicketRow.status == status)
        if priority is not None:
            query = query.where(TicketRow.priority == priority)
        if request_type is not None:
            query = query.where(TicketRow.request_type == request_type)
        if overdue_at is not None:
            query = query.where(
                TicketRow.status == "open",
                TicketRow.first_response_at.is_(None),  # type: ignore[union-attr]
                TicketRow.due_at < overdue_at,
            )
        if received_since is not None:
            query = query.where(TicketRow.received_at >= received_since)
        query = query.order_by(TicketRow.id)  # type: ignore[arg-type]
        if limit is not None:
            query = query.limit(limit)
        with self.transaction() as s:
            return list(s.exec(query))

    # --- triage ------------------------------------------------------------------------------

    def change_ticket(self, reference: str, change: TicketChange, now: datetime) -> tuple[TicketRow, bool] | None:
        """Apply a change and record its event in one transaction; None when there is no such
        ticket. The flag says whether anything changed."""
        canonical = find_reference(reference, self.reference_prefix) or reference
        with self.transaction() as s:
            ticket = s.exec(select(TicketRow).where(TicketRow.reference == canonical).with_for_update()).first()
            if ticket is None or ticket.id is None:
                return None
            event = change(ticket)
            if event is None:
                return ticket, False
            ticket.updated_at = now
            s.add(ticket)
            s.add(TicketEventRow(ticket_id=ticket.id, at=now, by=event.by[:200], action=event.action,
                                 detail=event.detail))
            s.flush()
            return ticket, True

    def ticket_events(self, ticket_id: int) -> list[TicketEventRow]:
        with self.transaction() as s:
            return list(
                s.exec(select(TicketEventRow).where(TicketEventRow.ticket_id == ticket_id).order_by(TicketEventRow.id))  # type: ignore[arg-type]
            )

    # --- deadline alerts ---------------------------------------------------------------------

    def unanswered_due_by(
        self, until: datetime, limit: int | None = None, after: tuple[datetime, int] | None = None
    ) -> list[TicketRow]:
        """Open tickets without a first response whose deadline is at or before ``until``,
        leaving out those already alerted as breached for that deadline (nothing is left to
        raise for them, and old unanswered tickets would otherwise be read on every run)."""
        breached = select(AlertRow.id).where(
            AlertRow.ticket_id == TicketRow.id, AlertRow.stage == "breached", AlertRow.due_at == TicketRow.due_at
        )
        with self.transaction() as s:
            return list(
                s.exec(
                    select(TicketRow)
                    .where(
                        TicketRow.status == "open",
                        TicketRow.first_response_at.is_(None),  # type: ignore[union-attr]
                        TicketRow.due_at <= until,
                        ~breached.exists(),
                        # A page after (deadline, id): a backlog of tickets is read a page at a time.
                        true() if after is None else or_(
                            TicketRow.due_at > after[0], and_(TicketRow.due_at == after[0], TicketRow.id > after[1])
                        ),
                    )
                    .order_by(TicketRow.due_at, TicketRow.id)  # type: ignore[arg-type]
                    .limit(limit)
                )
            )

    def raised_alerts(self, ticket_ids: Sequence[int]) -> set[tuple[int, str, datetime]]:
        """(ticket id, stage, deadline) of every alert already raised for these tickets."""
        found: set[tuple[int, str, datetime]] = set()
        with self.transaction() as s:
            for start in range(0, len(ticket_ids), 500):
                rows = s.exec(
                    select(AlertRow.ticket_id, AlertRow.stage, AlertRow.due_at).where(
                        AlertRow.ticket_id.in_(ticket_ids[start : start + 500])  # type: ignore[attr-defined]
                    )
                ).all()
                found.update((t, stage, due) for t, stage, due in rows)
        return found

    def record_alert(
        self, ticket_id: int, stage: str, due_at: datetime, outgoing: OutgoingMail | None, now: datetime
    ) -> bool:
        """Record an alert and queue its mail, all or nothing; False when it was raised already
        (by an earlier run, or by another daemon a moment ago)."""
        try:
            with self.transaction() as s:
                outbox_id = None
                if outgoing is not None:
                    outbox_id = self._queue(s.connection(), ticket_id, "alert", outgoing, now)
                s.add(AlertRow(ticket_id=ticket_id, stage=stage, due_at=due_at, created_at=now,
                               recipient=outgoing.recipient if outgoing else "", outbox_id=outbox_id))
                s.flush()
        except IntegrityError:
            if (ticket_id, stage, as_utc(due_at)) in self.raised_alerts([ticket_id]):
                return False
            raise
        return True


@dataclass(frozen=True)
class _Ticket:
    """The ticket a message was stored in, as the acknowledgement and the result need it."""

    id: int
    facts: TicketFacts
    type_rule: str | None


def _insert(c: Connection, model: type[SQLModel], **values: Any) -> int:
    """Insert one row with Core; its id."""
    result = c.execute(_insert_statement(model), insert_values(model, values))
    return int(result.inserted_primary_key[0])


@functools.cache
def _insert_statement(model: type[SQLModel]) -> Insert:
    return insert(_table(model))


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


def _outbox_item(row: Any) -> OutboxItem:
    """An outbox row (an OutboxRow, or a Core row of the outbox table) as a plain value."""
    assert row.id is not None
    return OutboxItem(
        id=row.id,
        ticket_id=row.ticket_id,
        kind=row.kind,
        message_id=row.message_id,
        recipient=row.recipient,
        envelope_sender=row.envelope_sender,
        subject=row.subject,
        data=row.data,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        give_up_at=row.give_up_at,
        last_error=row.last_error,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )

