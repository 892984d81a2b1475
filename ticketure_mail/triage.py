"""Staff's changes to a ticket: its priority, its request type, a first response given by hand, closing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import iso_utc
from .deadlines import ServicePolicy
from .model import Priority, RequestType
from .store import Store, TicketChange, TicketEvent
from .tables import TicketRow

# A type staff may give; urgency comes with priority 1 (set-priority 1), not with a type.
SETTABLE_TYPES = tuple(t.value for t in RequestType if t != RequestType.URGENT)


class NoSuchTicket(LookupError):
    """The reference names no ticket."""


class TriageRefused(ValueError):
    """The change makes no sense for this ticket; nothing was written."""


@dataclass(frozen=True)
class TriageResult:
    ticket: TicketRow
    changed: bool


def set_priority(
    store: Store, policy: ServicePolicy, reference: str, priority: Priority, by: str, now: datetime
) -> TriageResult:
    """Staff decide the priority: the deadline is counted again from the original arrival on
    that priority's target, and who did it and when is kept on the ticket and in its history."""

    def change(ticket: TicketRow) -> TicketEvent | None:
        due = policy.deadline(ticket.received_at, priority, RequestType(ticket.request_type), triaged=True)
        if ticket.priority == priority and ticket.priority_set_at is not None and ticket.due_at == due:
            return None
        detail = f"priority {ticket.priority} -> {int(priority)}; due {iso_utc(ticket.due_at)} -> {iso_utc(due)}"
        ticket.priority = int(priority)
        ticket.priority_set_by = by
        ticket.priority_set_at = now
        ticket.due_at = due
        return TicketEvent("set-priority", by, detail)

    return _change(store, reference, change, now)


def set_type(
    store: Store, policy: ServicePolicy, reference: str, request_type: RequestType, by: str, now: datetime
) -> TriageResult:
    """Staff correct the request type. The deadline moves only when the type decides it (an
    untriaged ticket, held to its type's target); the matched rule is cleared, since a person
    decided instead."""

    def change(ticket: TicketRow) -> TicketEvent | None:
        old = RequestType(ticket.request_type)
        if old == request_type:
            return None
        priority, triaged = Priority(ticket.priority), ticket.priority_set_at is not None
        detail = f"type {old.value} -> {request_type.value}"
        decides = policy.target_for(priority, old, triaged=triaged) != policy.target_for(
            priority, request_type, triaged=triaged)
        if decides:
            due = policy.deadline(ticket.received_at, priority, request_type, triaged=triaged)
            detail += f"; due {iso_utc(ticket.due_at)} -> {iso_utc(due)}"
            ticket.due_at = due
        ticket.request_type = request_type.value
        ticket.type_rule = None
        return TicketEvent("set-type", by, detail)

    return _change(store, reference, change, now)


# A response typed "now" on a machine whose clock is a little ahead is still now.
_CLOCK_SKEW = timedelta(minutes=2)


def record_response(store: Store, reference: str, by: str, at: datetime, now: datetime) -> TriageResult:
    """A first response given another way (phone, chat): it stops the response clock. A ticket
    that has one already keeps it."""

    def change(ticket: TicketRow) -> TicketEvent | None:
        if ticket.first_response_at is not None:
            return None
        if at < ticket.received_at:
            raise TriageRefused(f"a response at {iso_utc(at)} would come before the request ({iso_utc(ticket.received_at)})")
        if at > now + _CLOCK_SKEW:
            raise TriageRefused(f"a response at {iso_utc(at)} is in the future (it is {iso_utc(now)})")
        ticket.first_response_at = at
        ticket.first_response_by = by
        late = " (after the deadline)" if at > ticket.due_at else ""
        return TicketEvent("respond", by, f"first response at {iso_utc(at)}{late}")

    return _change(store, reference, change, now)


def close(store: Store, reference: str, by: str, now: datetime) -> TriageResult:
    """Close a ticket: no more alerts. Its first-response record stays as it is."""

    def change(ticket: TicketRow) -> TicketEvent | None:
        if ticket.status == "closed":
            return None
        ticket.status = "closed"
        ticket.closed_at = now
        return TicketEvent("close", by, "closed" if ticket.first_response_at else "closed without a first response")

    return _change(store, reference, change, now)


def _change(store: Store, reference: str, change: TicketChange, now: datetime) -> TriageResult:
    done = store.change_ticket(reference, change, now)
    if done is None:
        raise NoSuchTicket(reference)
    return TriageResult(*done)
