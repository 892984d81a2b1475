"""Runs one raw message through parse, dedupe, loop check, threading and the decision, then stores it."""

from __future__ import annotations

import logging
from datetime import datetime

from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from .acknowledgement import (
    OutgoingMail,
    TicketFacts,
    build_acknowledgement,
    load_templates,
    new_message_id,
)
from .clock import Clock, as_utc
from .config import Settings
from .decisions import Plan, Source, decide, dedupe_key
from .deadlines import policy_from_settings
from .errors import ParseError, TransientError
from .loops import judge, longest_window, rate_limit_reason
from .model import Outcome, ParsedMail, ProcessResult
from .parse_workers import ParseOutcome
from .request_types import TypeRules
from .senders import answer_address
from .staff import StaffDirectory
from .store import Store
from .urgency import UrgencyRule

if TYPE_CHECKING:
    from sqlmodel import Session

log = logging.getLogger(__name__)


class StorageUnavailable(TransientError):
    """The database cannot be reached; the message stays where it is and is tried again."""


class Processor:
    """Turns raw messages into outcomes. Every message ends in exactly one Outcome; the only
    exception that escapes is StorageUnavailable, which means "nothing was written, retry"."""

    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.urgency = UrgencyRule(settings.urgency.markers, settings.urgency.negations)
        self.policy = policy_from_settings(settings)
        self.templates = load_templates(settings)
        self.type_rules = TypeRules.from_settings(settings)
        self.staff = StaffDirectory.from_settings(settings)
        self.own_addresses = {settings.support.address, settings.smtp.from_address}
        if settings.smtp.envelope_sender:
            self.own_addresses.add(settings.smtp.envelope_sender)
        self._message_id_domain = settings.smtp.from_address.rpartition("@")[2]

    def process(
        self, raw: bytes, source: Source, received_at: datetime | None = None, parsed: ParseOutcome | None = None
    ) -> ProcessResult:
        """``parsed``: what a parser process made of ``raw`` (parse_workers.py); without it the
        message is parsed here."""
        result = self._process(raw, source, received_at, parsed)
        _log_result(result, source)
        return result

    def _process(
        self, raw: bytes, source: Source, received_at: datetime | None, parsed: ParseOutcome | None
    ) -> ProcessResult:
        now = self.clock.now()
        arrival = as_utc(received_at) if received_at is not None else now
        size = len(raw)
        if size > self.settings.imap.max_message_bytes:
            return self._oversized(source, raw, size, arrival)
        try:
            mail = _parse_in_line(raw) if parsed is None else parsed
            if isinstance(mail, ParseError):
                raise mail
        except ParseError as exc:
            return self._quarantine(source, f"cannot parse: {exc}", raw, arrival, None)
        try:
            result = self._process_parsed(mail, raw, source, arrival, now)
        except (OperationalError, DBAPIError) as exc:
            if _is_connection_problem(exc):
                raise StorageUnavailable(f"database unavailable: {exc.__class__.__name__}") from exc
            log.exception("database refused message-id=%s source=%s", mail.message_id, source.label())
            return self._quarantine(source, f"database error: {_short(exc)}", raw, arrival, mail)
        except SQLAlchemyError as exc:
            log.exception("database error on message-id=%s source=%s", mail.message_id, source.label())
            return self._quarantine(source, f"database error: {_short(exc)}", raw, arrival, mail)
        except Exception as exc:  # a bug must park the message, never stop the poller
            log.exception("internal error on message-id=%s source=%s", mail.message_id, source.label())
            return self._quarantine(source, f"internal error: {_short(exc)}", raw, arrival, mail)
        return result

    def _process_parsed(
        self, mail: ParsedMail, raw: bytes, source: Source, arrival: datetime, now: datetime
    ) -> ProcessResult:
        key = dedupe_key(mail)
        try:
            # One transaction per message holds the reads that decide it (ledger, thread, rate
            # limit) and the writes: one commit instead of four, and on SQLite (BEGIN IMMEDIATE)
            # nothing can change between the decision and its record.
            with self.store.transaction() as session:
                if self.store.is_processed(key, session):
                    return _duplicate(mail, key)
                plan = self.plan(mail, source, arrival, now, session)
                if plan.outcome != Outcome.QUARANTINED:
                    return self.store.apply(plan, raw, now, self._build_ack, session)
        except IntegrityError:
            if self.store.is_duplicate(key):  # another daemon recorded the same message first
                return _duplicate(mail, key)
            raise
        return self._quarantine(source, plan.reason, raw, arrival, mail)

    def plan(
        self, mail: ParsedMail, source: Source, arrival: datetime, now: datetime, session: Session | None = None
    ) -> Plan:
        """What would become of a message that is not a duplicate; reads, never writes (explain uses it)."""
        return decide(
            mail,
            source=source,
            received_at=arrival,
            candidate=self.store.find_thread(mail, session),
            verdict=judge(mail, self.own_addresses),
            urgency=self.urgency,
            policy=self.policy,
            acknowledge_followups=self.settings.acknowledgement.acknowledge_followups,
            subject_reference_from=self.settings.threading.subject_reference_from,
            ack_limit=self._ack_limit(mail, now, session),
            type_rules=self.type_rules,
            staff=self.staff,
            attachment_limit=self.settings.attachments.max_bytes_per_message,
        )

    def _ack_limit(self, mail: ParsedMail, now: datetime, session: Session | None) -> str:
        recipient = answer_address(mail)
        limits = self.settings.acknowledgement.rate_limits
        if recipient is None or not limits:
            return ""
        sent = self.store.recent_ack_times(recipient.address, now - longest_window(limits), session)
        return rate_limit_reason(sent, now, limits)

    def _build_ack(self, plan: Plan, facts: TicketFacts) -> OutgoingMail:
        assert plan.ack is not None and plan.ack_recipient is not None
        return build_acknowledgement(
            plan.ack,
            facts,
            plan.mail,
            plan.ack_recipient,
            self.settings,
            self.templates,
            new_message_id(self._message_id_domain),
            self.clock.now(),
        )

    def quarantine_oversized(self, source: Source, size: int, received_at: datetime | None) -> ProcessResult:
        """A message left on the IMAP server because of its size: recorded, never downloaded."""
        result = self._oversized(source, None, size, received_at or self.clock.now())
        _log_result(result, source)
        return result

    def _oversized(self, source: Source, raw: bytes | None, size: int, received_at: datetime) -> ProcessResult:
        limit = self.settings.imap.max_message_bytes
        reason = f"message of {size} bytes is over imap.max_message_bytes ({limit})"
        # Bytes handed to us (ingest) are kept, as nobody else holds them; from IMAP they stay
        # on the server, in the quarantine folder.
        return self._quarantine(source, reason, raw, received_at, None, size=size)

    def _quarantine(
        self,
        source: Source,
        reason: str,
        raw: bytes | None,
        received_at: datetime,
        mail: ParsedMail | None,
        size: int | None = None,
    ) -> ProcessResult:
        size = size if size is not None else len(raw or b"")
        try:
            self.store.quarantine(source=source, reason=reason, raw=raw, size=size, received_at=received_at,
                                  now=self.clock.now(), mail=mail)
        except SQLAlchemyError as exc:
            if isinstance(exc, DBAPIError) and _is_connection_problem(exc):
                raise StorageUnavailable(f"cannot record quarantine: {exc.__class__.__name__}") from exc
            # The database refused something taken from the mail itself: keep the bytes and the
            # reason without it, so one hostile message can never block the mailbox.
            log.warning("quarantine row refused (%s); recording it without the message's fields", _short(exc))
            try:
                self.store.quarantine(source=source, reason=reason, raw=raw, size=size, received_at=received_at,
                                      now=self.clock.now(), mail=None)
            except SQLAlchemyError as again:
                raise StorageUnavailable(f"cannot record quarantine: {again.__class__.__name__}") from again
        return ProcessResult(
            outcome=Outcome.QUARANTINED,
            reason=reason,
            subject=mail.subject if mail else "",
            from_address=mail.from_address.address if mail and mail.from_address else "",
            message_id=mail.message_id if mail else None,
        )


def _parse_in_line(raw: bytes) -> ParsedMail:
    """Parse in this process, when no parser process did (workers.parser_processes = 0, or
    ingest). Imported on first use, as a daemon with parser processes never loads the parser."""
    from .parsing import parse_mail

    return parse_mail(raw)


def _duplicate(mail: ParsedMail, key: str) -> ProcessResult:
    return ProcessResult(
        outcome=Outcome.DUPLICATE,
        reason="already processed: " + ("same content" if key.startswith("digest:") else "same Message-ID"),
        subject=mail.subject,
        from_address=mail.from_address.address if mail.from_address else "",
        message_id=mail.message_id,
    )


def _log_result(result: ProcessResult, source: Source) -> None:
    level = logging.WARNING if result.outcome == Outcome.QUARANTINED else logging.INFO
    log.log(
        level,
        "%s message-id=<%s> source=%s ticket=%s priority=%s ack=%s%s",
        result.outcome.value,
        result.message_id or "",
        source.label(),
        result.ticket or "-",
        result.priority or "-",
        "queued" if result.ack else "no",
        f" reason={result.reason}" if result.reason else "",
    )


def _is_connection_problem(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower() if exc.orig is not None else ""
    return any(
        s in text
        for s in ("could not connect", "connection refused", "server closed", "terminating connection",
                  "database is locked", "unable to open database", "disk i/o error", "connection timeout")
    )


def _short(exc: BaseException) -> str:
    """One line about an error. For a database error only the driver's own message: the SQL
    statement and its parameters would copy the mail's content into logs and reasons."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        text = f"{exc.__class__.__name__}: {exc.orig.__class__.__name__}: {first}"
    else:
        text = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
    return text[:500]
