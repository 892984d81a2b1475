"""Recognises automatic mail (RFC 3834) so that no robot ever opens a ticket or gets an answer."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import RateLimit

from .model import ParsedMail
from .senders import answer_address, requester_of

# The header our own acknowledgements carry; a message that has it came from us.
LOOP_HEADER = "X-Ticketure-Loop"

_DAEMON_SENDER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)$", re.IGNORECASE)
_NOREPLY_SENDER = re.compile(r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)([-+_.].*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class LoopVerdict:
    """``automatic``: a robot wrote it, so it opens no ticket. ``no_ack``: a person may have
    written it, but answering it would go to a list, a robot or nobody. ``reason`` says why."""

    automatic: bool
    no_ack: bool
    reason: str


HUMAN = LoopVerdict(automatic=False, no_ack=False, reason="")


def judge(mail: ParsedMail, own_addresses: Collection[str]) -> LoopVerdict:
    """Decide, from headers alone, whether a message is automatic or must not be answered."""
    own = {a.lower() for a in own_addresses}
    # The address the rules look at is the one that would be answered when From is missing:
    # a bounce that carries only Sender or Return-Path must not slip past them.
    requester = requester_of(mail)
    sender = requester.address.lower() if requester else ""
    local_part = sender.rpartition("@")[0]
    answer = answer_address(mail)
    answer_to = answer.address.lower() if answer else ""

    if mail.header(LOOP_HEADER):
        return _automatic(f"carries our own {LOOP_HEADER} header")
    for value in mail.headers.get("x-loop", ()):
        if value.strip().strip("<>").lower() in own:
            return _automatic("X-Loop names our own address")
    if sender and sender in own:
        return _automatic("sent from our own address")
    if mail.is_delivery_report:
        return _automatic("delivery status notification")
    auto_submitted = mail.header("auto-submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return _automatic(f"Auto-Submitted: {auto_submitted}")
    if mail.return_path == "":
        return _automatic("null return path (Return-Path: <>)")
    if _DAEMON_SENDER.match(local_part):
        return _automatic(f"sent by {local_part}")
    if mail.header("x-autoreply") or mail.header("x-autorespond"):
        return _automatic("X-Autoreply/X-Autorespond header")
    precedence = mail.header("precedence").strip().lower()
    if precedence == "auto_reply":
        return _automatic("Precedence: auto_reply")

    if precedence in ("bulk", "junk", "list"):
        return _no_ack(f"Precedence: {precedence}")
    if mail.header("list-id"):
        return _no_ack("List-Id header (mailing list)")
    if mail.header("list-post") or mail.header("list-unsubscribe"):
        return _no_ack("List-Post/List-Unsubscribe header (mailing list or newsletter)")
    suppress = {v.strip().lower() for v in mail.header("x-auto-response-suppress").split(",")}
    if suppress & {"all", "autoreply"}:
        return _no_ack("X-Auto-Response-Suppress asks for no automatic reply")
    if _NOREPLY_SENDER.match(local_part):
        return _no_ack(f"no-reply sender {sender}")
    if answer_to and answer_to != sender:
        answer_local = answer_to.rpartition("@")[0]
        if answer_to in own:
            return _no_ack("Reply-To names our own address")
        if _DAEMON_SENDER.match(answer_local) or _NOREPLY_SENDER.match(answer_local):
            return _no_ack(f"Reply-To names {answer_local}, which reads no mail")
    return HUMAN


def _automatic(reason: str) -> LoopVerdict:
    return LoopVerdict(automatic=True, no_ack=True, reason=reason)


def _no_ack(reason: str) -> LoopVerdict:
    return LoopVerdict(automatic=False, no_ack=True, reason=reason)


def rate_limit_reason(sent_at: Sequence[datetime], now: datetime, limits: Sequence[RateLimit]) -> str:
    """Why one more acknowledgement to an address would be too many, or "" if it would not.

    ``sent_at`` are the times earlier acknowledgements to that address were queued.
    """
    for limit in limits:
        since = now - timedelta(minutes=limit.minutes)
        recent = sum(1 for t in sent_at if t > since)
        if recent >= limit.acknowledgements:
            return f"rate limit: {recent} acknowledgements to this address in {limit.minutes} minutes"
    return ""


def longest_window(limits: Sequence[RateLimit]) -> timedelta:
    return timedelta(minutes=max((limit.minutes for limit in limits), default=0))
