"""Says what the daemon would do with one raw message, and why, without storing or sending anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.policy import default

from .acknowledgement import (
    REQUEST_TYPE_LABELS,
    TicketFacts,
    build_acknowledgement,
    describe_target,
    format_due,
    template_name,
)
from .clock import iso_utc
from .decisions import Plan, Source, dedupe_key
from .errors import ParseError
from .loops import judge
from .model import Priority, RequestType
from .parse_workers import ParseOutcome
from .pipeline import Processor


@dataclass
class Explanation:
    """Every step's finding; None or "" where a step did not apply."""

    outcome: str
    reason: str = ""
    message_id: str | None = None
    sender: str = ""
    subject: str = ""
    duplicate: bool = False
    loop_rule: str = ""
    automatic: bool = False
    thread_candidate: str | None = None
    matched_by: str | None = None
    joins: bool = False
    from_staff: bool = False
    urgency_marker: str | None = None
    type_rule: str | None = None
    type_word: str | None = None
    type_where: str | None = None
    priority: int | None = None
    request_type: str | None = None
    due_at: datetime | None = None
    due_local: str = ""
    clock: str = ""
    ack: bool = False
    ack_template: str | None = None
    ack_recipient: str | None = None
    ack_blocked: str = ""
    ack_text: str = ""
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        data = dict(self.__dict__)
        data["due_at"] = iso_utc(self.due_at) if self.due_at else None
        return data


def explain(processor: Processor, raw: bytes, arrival: datetime, now: datetime,
            parsed: ParseOutcome | None = None) -> Explanation:
    """Run the same steps as the pipeline up to, not including, the transaction. ``parsed``:
    what a parser process made of ``raw``; without it the message is parsed here."""
    settings = processor.settings
    if len(raw) > settings.imap.max_message_bytes:
        return Explanation("quarantined", f"message of {len(raw)} bytes is over imap.max_message_bytes")
    from .parsing import parse_mail  # imported here: the daemon's process need not load the parser

    try:
        mail = parse_mail(raw) if parsed is None else parsed
        if isinstance(mail, ParseError):
            raise mail
    except ParseError as exc:
        return Explanation("quarantined", f"cannot parse: {exc}")
    found = Explanation(
        outcome="",
        message_id=mail.message_id,
        sender=mail.from_address.address if mail.from_address else "",
        subject=mail.subject,
    )
    if processor.store.is_processed(dedupe_key(mail)):
        found.outcome, found.duplicate = "duplicate", True
        found.reason = "already processed: nothing would be written or sent again"
        return found
    verdict = judge(mail, processor.own_addresses)
    found.automatic, found.loop_rule = verdict.automatic, verdict.reason
    candidate = processor.store.find_thread(mail)
    if candidate is not None:
        found.thread_candidate, found.matched_by = candidate.reference, candidate.matched_by
    found.from_staff = bool(found.sender) and processor.staff.is_staff(found.sender)

    plan = processor.plan(mail, Source("ingest"), arrival, now)
    found.outcome, found.reason = plan.outcome.value, plan.reason
    found.joins = plan.join_ticket is not None
    if plan.new_ticket is not None:
        _new_ticket(found, plan, processor)
    elif plan.join_ticket is not None:
        ticket = processor.store.ticket(plan.join_ticket.reference)
        if ticket is not None:
            found.priority, found.request_type = ticket.priority, ticket.request_type
            found.due_at = plan.escalation.due_at if plan.escalation else ticket.due_at
            found.type_rule = ticket.type_rule
        if plan.escalation is not None:
            found.urgency_marker = plan.escalation.urgency_marker
            found.priority, found.request_type = int(Priority.URGENT), RequestType.URGENT.value
            found.clock = describe_target(processor.policy.target_for(Priority.URGENT, RequestType.URGENT),
                                          settings.calendar)
    if found.due_at is not None:
        found.due_local = format_due(found.due_at, settings.timezone)
    if plan.ack is not None and plan.ack_recipient is not None and found.priority is not None:
        _ack(found, plan, processor, now)
    else:
        found.ack_blocked = _why_no_ack(plan, found)
    return found


def _new_ticket(found: Explanation, plan: Plan, processor: Processor) -> None:
    nt = plan.new_ticket
    assert nt is not None
    found.priority, found.request_type = int(nt.priority), nt.request_type.value
    found.urgency_marker, found.due_at = nt.urgency_marker, nt.due_at
    if nt.urgency_marker is None:
        match = processor.type_rules.classify(plan.mail.subject, plan.mail.body_text)
        found.type_rule, found.type_word, found.type_where = match.rule, match.word, match.where
    else:
        found.notes.append("an urgency marker makes priority 1: the request type rules are not consulted")
    target = processor.policy.target_for(nt.priority, nt.request_type)
    found.clock = describe_target(target, processor.settings.calendar)


def _ack(found: Explanation, plan: Plan, processor: Processor, now: datetime) -> None:
    assert plan.ack is not None and plan.ack_recipient is not None
    assert found.priority is not None and found.request_type is not None and found.due_at is not None
    prefix = processor.settings.support.reference_prefix
    reference = plan.join_ticket.reference if plan.join_ticket else f"{prefix}-??????"
    subject = plan.new_ticket.subject if plan.new_ticket else plan.mail.subject
    facts = TicketFacts(reference, subject, Priority(found.priority), RequestType(found.request_type), found.due_at)
    out = build_acknowledgement(plan.ack, facts, plan.mail, plan.ack_recipient, processor.settings,
                                processor.templates, "explain@invalid", now)
    message = message_from_bytes(out.data, policy=default)
    body = message.get_body(preferencelist=("plain",))
    found.ack = True
    found.ack_template = template_name(plan.ack, facts.request_type)
    found.ack_recipient = out.recipient
    text = body.get_content() if body is not None else ""
    found.ack_text = f"Subject: {out.subject}\n\n" + text.replace("\r\n", "\n")


def _why_no_ack(plan: Plan, found: Explanation) -> str:
    if plan.outcome.value in ("discarded", "quarantined"):
        return plan.reason
    if plan.message_kind == "response":
        return "a reply from staff is never acknowledged"
    if plan.ack_suppressed:
        return f"rate limit: {plan.ack_suppressed}"
    if found.loop_rule:
        return f"loop rule: {found.loop_rule}"
    if plan.join_ticket is not None:
        return "a follow-up is not acknowledged (acknowledgement.acknowledge_followups is off)"
    return plan.reason or "no acknowledgement"


def format_explanation(found: Explanation) -> str:
    """The explanation as lines for people."""
    lines = [
        f"message:   <{found.message_id or 'no Message-ID'}> from {found.sender or '(no sender)'}",
        f"subject:   {found.subject or '(no subject)'}",
    ]
    if found.duplicate or not found.sender and found.outcome == "quarantined":
        lines.append(f"outcome:   {found.outcome}: {found.reason}")
        return "\n".join(lines)
    if found.automatic:
        lines.append(f"loop rule: automatic mail ({found.loop_rule}): opens no ticket, never answered")
    elif found.loop_rule:
        lines.append(f"loop rule: a person may have written it, but it is not answered ({found.loop_rule})")
    else:
        lines.append("loop rule: none applies (mail from a person)")
    if found.thread_candidate is None:
        lines.append("threading: no In-Reply-To, References, Thread-Index or subject reference names a ticket")
    elif found.joins:
        lines.append(f"threading: joins {found.thread_candidate} (matched by {found.matched_by})")
    else:
        lines.append(f"threading: names {found.thread_candidate} by {found.matched_by}, but does not join it"
                     " (the sender took no part in it)")
    if found.from_staff:
        lines.append(f"staff:     {found.sender} is staff")
    if found.urgency_marker:
        lines.append(f"urgency:   marker {found.urgency_marker!r} in the subject -> priority 1")
    elif found.outcome == "created":
        lines.append("urgency:   no marker in the subject")
    if found.outcome == "created" and not found.urgency_marker:
        if found.type_rule:
            lines.append(f"type rule: {found.type_rule!r} matched {found.type_word!r} in the {found.type_where}")
        else:
            lines.append("type rule: none matched: standard support")
    lines.append(f"outcome:   {found.outcome}" + (f" ({found.reason})" if found.reason else ""))
    if found.priority is not None and found.request_type is not None:
        label = REQUEST_TYPE_LABELS.get(RequestType(found.request_type), found.request_type)
        lines.append(f"priority:  {found.priority}; request type: {label}")
    if found.due_at is not None:
        lines.append(f"deadline:  {found.due_local} = {found.due_at.isoformat().replace('+00:00', 'Z')}")
    if found.clock:
        lines.append(f"clock:     {found.clock}")
    for note in found.notes:
        lines.append(f"note:      {note}")
    if found.ack:
        lines.append(f"ack:       would be sent to {found.ack_recipient} (template {found.ack_template})")
        lines += ["", "--- acknowledgement ---", found.ack_text.rstrip()]
    else:
        lines.append(f"ack:       none: {found.ack_blocked}")
    return "\n".join(lines)
