"""Decides what becomes of one parsed message: a new ticket, a reply in one, or a discard; pure.

Threading rule (documented, and tested in tests/test_decisions.py):
1. A message whose In-Reply-To or References names any message of a ticket (an inbound one or
   one of our acknowledgements) joins that ticket, whoever sent it: a colleague in Cc who
   answers the thread belongs to it.
2. Otherwise, for mail from Outlook and Exchange, which may strip In-Reply-To and References:
   a message whose Thread-Index starts with the same 22-byte conversation block as a message
   of a ticket, sent by the same address, with the same subject once reply prefixes are
   removed, joins that ticket.
3. Otherwise a ticket reference in the subject (``[TKT-000042]``) joins that ticket only when
   the sender is a participant (see below). A bare subject reference from a stranger opens a
   new ticket instead, so that guessing a reference cannot put mail into somebody else's
   ticket.
4. Otherwise the message opens a new ticket.
Participants are the requester and whoever sent the ticket a message while a participant.
A non-participant who joins by rule 1 (say, someone who was forwarded one of the messages)
is kept in the ticket, but cannot escalate it, gets no acknowledgement (which would reveal
the ticket's reference and subject), and does not become a participant by writing.
Automatic mail (see loops.py) never opens a ticket: it joins a matching ticket as a note that
triggers nothing, or it is discarded with its reason.
A participant other than staff who writes to a closed ticket reopens it: it owes a response
again, due as a new request of its priority and type would be, counted from that message.
Staff writing after closing, strangers and automatic mail leave it closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from .acknowledgement import AckKind
from .deadlines import ServicePolicy, due_at
from .loops import LoopVerdict
from .model import Address, Attachment, Outcome, ParsedMail, Priority, RequestType
from .senders import address_key, answer_address, requester_of, unanswerable_reason
from .request_types import STANDARD, TypeMatch, TypeRules
from .staff import NO_STAFF, StaffDirectory
from .subjects import strip_reply_prefixes
from .urgency import UrgencyRule

# "response": a reply from staff, which stops the ticket's response clock.
MessageKind = Literal["request", "followup", "note", "response"]
MatchedBy = Literal["in-reply-to", "references", "thread-index", "subject-reference", "delivery-report"]

# Outlook's Thread-Index starts with a 22-byte block shared by every message of a conversation.
_THREAD_INDEX_ROOT_BYTES = 22


@dataclass(frozen=True)
class Source:
    """Where a raw message came from: an IMAP folder position, or a pipe/file delivery."""

    kind: Literal["imap", "ingest", "quarantine"]
    folder: str = ""
    uidvalidity: int | None = None
    uid: int | None = None
    # For a retry from quarantine: the entry retried, which a new failure updates.
    quarantine_id: int | None = None

    def label(self) -> str:
        if self.kind == "imap":
            return f"imap:{self.folder}:{self.uidvalidity}:{self.uid}"
        return self.kind


@dataclass(frozen=True)
class ThreadCandidate:
    """An existing ticket that a message may belong to, and how it was found."""

    ticket_id: int
    reference: str
    priority: Priority
    request_type: RequestType
    requester: str
    participants: frozenset[str]
    matched_by: MatchedBy
    first_response_at: datetime | None = None
    closed: bool = False
    # Staff set its priority: the priority's target applies, not the request type's.
    triaged: bool = False


@dataclass(frozen=True)
class Classification:
    priority: Priority
    request_type: RequestType
    urgency_marker: str | None
    # Which type rule matched, and on which words; STANDARD when none did or the mail is urgent.
    type_match: TypeMatch = STANDARD


@dataclass(frozen=True)
class NewTicket:
    subject: str
    requester: Address
    priority: Priority
    request_type: RequestType
    urgency_marker: str | None
    due_at: datetime
    type_rule: str | None = None


@dataclass(frozen=True)
class Escalation:
    """A follow-up raised its ticket to priority 1; the deadline counts from its arrival."""

    urgency_marker: str
    due_at: datetime


@dataclass(frozen=True)
class Reopening:
    """The client wrote to a closed ticket: it is open again and owes a response by ``due_at``,
    counted from this message's arrival."""

    by: str
    due_at: datetime


@dataclass(frozen=True)
class Plan:
    """Everything to write for one message, applied by the store in one transaction."""

    outcome: Outcome
    reason: str
    dedupe_key: str
    mail: ParsedMail
    received_at: datetime
    source: Source
    new_ticket: NewTicket | None = None
    join_ticket: ThreadCandidate | None = None
    escalation: Escalation | None = None
    reopening: Reopening | None = None
    message_kind: MessageKind | None = None
    ack: AckKind | None = None
    ack_recipient: Address | None = None
    # An acknowledgement that was due but held back (rate limit): noted on the ticket.
    ack_suppressed: str = ""
    # Our outgoing Message-IDs that a delivery status notification reports as undelivered.
    bounced_message_ids: tuple[str, ...] = ()
    # False for a sender who had not taken part in the ticket (see the threading rule).
    from_participant: bool = True
    # Attachments over the per-message limit: not stored, named in a note on the ticket.
    dropped_attachments: tuple[Attachment, ...] = ()


def dedupe_key(mail: ParsedMail) -> str:
    """The key under which a message is remembered: its Message-ID, else a digest of its content
    (not its UID, so that the same message fetched again from another place is still known)."""
    if mail.message_id:
        key = f"mid:{mail.message_id}"
        if len(key) <= 900:
            return key
        return "mid-sha256:" + hashlib.sha256(mail.message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"digest:{mail.content_digest}"


def split_attachments(attachments: tuple[Attachment, ...], limit: int) -> tuple[tuple[Attachment, ...], tuple[Attachment, ...]]:
    """Which attachments fit in ``limit`` bytes, in message order, and which do not. A file
    that does not fit is left out, but a smaller one after it may still be kept."""
    kept: list[Attachment] = []
    dropped: list[Attachment] = []
    room = limit
    for attachment in attachments:
        if attachment.size <= room:
            kept.append(attachment)
            room -= attachment.size
        else:
            dropped.append(attachment)
    return tuple(kept), tuple(dropped)


def thread_index_root(mail: ParsedMail) -> str | None:
    """The conversation block of an Outlook Thread-Index header, hex, or None."""
    value = "".join(mail.header("thread-index").split())
    if not value:
        return None
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    if len(decoded) < _THREAD_INDEX_ROOT_BYTES:
        return None
    return decoded[:_THREAD_INDEX_ROOT_BYTES].hex()


def same_conversation_subject(a: str, b: str) -> bool:
    """Subjects equal once reply prefixes, case and spacing are set aside."""
    return " ".join(strip_reply_prefixes(a).casefold().split()) == " ".join(strip_reply_prefixes(b).casefold().split())


def classify(mail: ParsedMail, urgency: UrgencyRule, type_rules: TypeRules | None = None) -> Classification:
    """A subject marker makes priority 1; anything else is priority 3 until triage, of the type
    the first matching rule gives (standard support when none does)."""
    marker = urgency.find(mail.subject)
    if marker is not None:
        return Classification(Priority.URGENT, RequestType.URGENT, marker)
    match = type_rules.classify(mail.subject, mail.body_text) if type_rules is not None else STANDARD
    return Classification(Priority.NORMAL, match.request_type, None, match)


def decide(
    mail: ParsedMail,
    *,
    source: Source,
    received_at: datetime,
    candidate: ThreadCandidate | None,
    verdict: LoopVerdict,
    urgency: UrgencyRule,
    policy: ServicePolicy,
    acknowledge_followups: bool,
    subject_reference_from: Literal["participants", "anyone"] = "participants",
    ack_limit: str = "",
    type_rules: TypeRules | None = None,
    staff: StaffDirectory = NO_STAFF,
    attachment_limit: int | None = None,
) -> Plan:
    """The plan for one message that is not a duplicate.

    ``ack_limit`` is why one more acknowledgement to this sender would be too many ("" if not);
    ``attachment_limit`` the decoded attachment bytes a message may store (None: no limit).
    """
    plan = _decide(mail, source, received_at, candidate, verdict, urgency, policy, acknowledge_followups,
                   subject_reference_from, type_rules, staff)
    if attachment_limit is not None:
        _kept, dropped = split_attachments(mail.attachments, attachment_limit)
        plan = replace(plan, dropped_attachments=dropped)
    if plan.ack is not None and ack_limit:
        reason = "; ".join(p for p in (plan.reason, f"acknowledgement suppressed: {ack_limit}") if p)
        return replace(plan, ack=None, ack_recipient=None, ack_suppressed=ack_limit, reason=reason)
    return plan


def _decide(
    mail: ParsedMail,
    source: Source,
    received_at: datetime,
    candidate: ThreadCandidate | None,
    verdict: LoopVerdict,
    urgency: UrgencyRule,
    policy: ServicePolicy,
    acknowledge_followups: bool,
    subject_reference_from: Literal["participants", "anyone"],
    type_rules: TypeRules | None,
    staff: StaffDirectory,
) -> Plan:
    key = dedupe_key(mail)
    base = dict(dedupe_key=key, mail=mail, received_at=received_at, source=source)
    requester = requester_of(mail)
    # Staff answer tickets they never took part in, so a reference in the subject is enough for them.
    from_staff = requester is not None and staff.is_staff(requester.address)
    joins = candidate is not None and (
        subject_reference_from == "anyone" or from_staff or _may_join(candidate, requester)
    )

    if verdict.automatic:
        bounced = mail.reported_message_ids if mail.is_delivery_report else ()
        if candidate is not None and candidate.matched_by != "subject-reference":
            return Plan(Outcome.THREADED, f"automatic mail kept as a note: {verdict.reason}",
                        join_ticket=candidate, message_kind="note", bounced_message_ids=bounced,
                        from_participant=False, **base)
        return Plan(Outcome.DISCARDED, f"automatic mail: {verdict.reason}", bounced_message_ids=bounced, **base)

    if requester is None:
        return Plan(Outcome.QUARANTINED, "no sender address in From, Sender or Return-Path", **base)

    recipient = answer_address(mail) or requester
    ack_blocked = (verdict.reason if verdict.no_ack else "") or unanswerable_reason(recipient.address)

    if joins and candidate is not None and from_staff:
        # Staff answering: the client hears from them, not from us, and an "Urgent" in a
        # quoted subject is not a request to escalate.
        return Plan(Outcome.THREADED, _staff_reason(candidate), join_ticket=candidate, message_kind="response",
                    **base)

    if joins and candidate is not None and not _is_participant(candidate, requester):
        # Someone who knows one of the ticket's Message-IDs, but never took part in it: the
        # message is kept with the ticket, but it changes nothing and reveals nothing.
        return Plan(Outcome.THREADED, "from someone not yet part of the ticket: no escalation, no acknowledgement",
                    join_ticket=candidate, message_kind="followup", from_participant=False, **base)

    if joins and candidate is not None:
        marker = urgency.find(mail.subject)
        reopening: Reopening | None = None
        reopened = ""
        if candidate.closed:
            # The client needs something more: the ticket owes a response again, on the clock a
            # new request of its priority and type would run on.
            target = policy.target_for(candidate.priority, candidate.request_type, triaged=candidate.triaged)
            reopening = Reopening(requester.address, due_at(received_at, target, policy.calendar))
            reopened = "reopened: the client wrote after it was closed"
        if marker is not None and candidate.priority != Priority.URGENT:
            escalation = Escalation(marker, due_at(received_at, policy.target_for(Priority.URGENT, RequestType.URGENT),
                                                   policy.calendar))
            ack: AckKind | None = None if ack_blocked else "escalated"
            escalated = f"escalated to priority 1 by marker {marker!r}"
            return Plan(Outcome.THREADED, _reason("; ".join(p for p in (reopened, escalated) if p), ack_blocked),
                        join_ticket=candidate, escalation=escalation, reopening=reopening, message_kind="followup",
                        ack=ack, ack_recipient=recipient if ack else None, **base)
        ack = "standard" if acknowledge_followups and not ack_blocked else None
        return Plan(Outcome.THREADED, _reason(reopened, ack_blocked), join_ticket=candidate, reopening=reopening,
                    message_kind="followup", ack=ack, ack_recipient=recipient if ack else None, **base)

    found = classify(mail, urgency, type_rules)
    deadline = due_at(received_at, policy.target_for(found.priority, found.request_type), policy.calendar)
    ticket = NewTicket(mail.subject, requester, found.priority, found.request_type, found.urgency_marker, deadline,
                       type_rule=found.type_match.rule)
    ack = None if ack_blocked else ("urgent" if found.priority == Priority.URGENT else "standard")
    return Plan(Outcome.CREATED, _reason("", ack_blocked), new_ticket=ticket, message_kind="request",
                ack=ack, ack_recipient=recipient if ack else None, **base)


def _may_join(candidate: ThreadCandidate, requester: Address | None) -> bool:
    if candidate.matched_by != "subject-reference":
        return True
    return _is_participant(candidate, requester)


def _is_participant(candidate: ThreadCandidate, requester: Address | None) -> bool:
    return requester is not None and address_key(requester.address) in candidate.participants


def _staff_reason(candidate: ThreadCandidate) -> str:
    if candidate.first_response_at is None:
        return "reply from staff: first response recorded, no acknowledgement"
    return "reply from staff (first response already recorded), no acknowledgement"


def _reason(main: str, ack_blocked: str) -> str:
    parts = [p for p in (main, f"no acknowledgement: {ack_blocked}" if ack_blocked else "") if p]
    return "; ".join(parts)
