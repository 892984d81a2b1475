"""Watches first-response deadlines: which alerts are due (pure), and the job that raises them."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from .acknowledgement import new_message_id
from .alerts import AlertFacts, AlertStage, build_alert
from .clock import Clock
from .config import DueSoonSettings, Settings, parse_duration
from .model import Priority
from .store import Store
from .tables import TicketRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchedTicket:
    """What the watcher needs to know of a ticket."""

    id: int
    reference: str
    priority: Priority
    due_at: datetime
    status: str = "open"
    first_response_at: datetime | None = None


@dataclass(frozen=True)
class DueAlert:
    ticket_id: int
    stage: AlertStage
    due_at: datetime


def alerts_due(
    tickets: Iterable[WatchedTicket],
    raised: Collection[tuple[int, str, datetime]],
    now: datetime,
    due_soon_before: Mapping[Priority, timedelta],
) -> list[DueAlert]:
    """The alerts to raise now. The rule:

    - A closed ticket, or one whose first response is recorded, gets none: its clock has stopped.
    - Past its deadline (at the deadline itself too), a ticket gets one "breached" alert.
    - Within its priority's lead before the deadline, one "due_soon" alert; a lead of zero
      means none for that priority.
    - A ticket that passed its deadline unwatched (the daemon was down) gets only the
      "breached" alert: "due soon" would be news from the past.
    - ``raised`` holds (ticket id, stage, deadline) of alerts already raised; each is raised
      once per deadline, so a restart repeats none and a moved deadline (triage, an urgent
      follow-up) re-arms both stages.
    """
    due: list[DueAlert] = []
    for ticket in tickets:
        if ticket.status != "open" or ticket.first_response_at is not None:
            continue
        if now >= ticket.due_at:
            stage: AlertStage = "breached"
        else:
            lead = due_soon_before.get(ticket.priority, timedelta(0))
            if lead <= timedelta(0) or now < ticket.due_at - lead:
                continue
            stage = "due_soon"
        if (ticket.id, stage, ticket.due_at) not in raised:
            due.append(DueAlert(ticket.id, stage, ticket.due_at))
    return due


# Tickets read per query: after an outage thousands may be due, and memory must stay flat.
PAGE_SIZE = 500


def leads_from_settings(due_soon: DueSoonSettings) -> dict[Priority, timedelta]:
    texts = (due_soon.priority_1, due_soon.priority_2, due_soon.priority_3, due_soon.priority_4)
    return {p: parse_duration(t) for p, t in zip(Priority, texts, strict=True)}


@dataclass
class WatchReport:
    due_soon: int = 0
    breached: int = 0
    error: str = ""

    @property
    def raised(self) -> int:
        return self.due_soon + self.breached


class DeadlineWatcher:
    """The scheduled job: reads what is due, raises each alert once, queues its mail."""

    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.leads = leads_from_settings(settings.watcher.due_soon_before)
        self._domain = settings.smtp.from_address.rpartition("@")[2]

    def run(self) -> WatchReport:
        """One check. Never raises for a database fault: the next run catches up, because what
        is due is worked out from the stored deadlines and alerts, not from the last run."""
        report = WatchReport()
        now = self.clock.now()
        try:
            until = now + max(self.leads.values())
            after: tuple[datetime, int] | None = None
            while True:
                rows = self.store.unanswered_due_by(until, limit=PAGE_SIZE, after=after)
                if not rows:
                    break
                self._check_page(rows, now, report)
                last = rows[-1]
                assert last.id is not None
                after = (last.due_at, last.id)
        except SQLAlchemyError as exc:
            report.error = f"deadline watcher: database unavailable: {exc.__class__.__name__}"
            log.warning("%s", report.error)
        return report

    def _check_page(self, rows: list[TicketRow], now: datetime, report: WatchReport) -> None:
        by_id = {row.id: row for row in rows if row.id is not None}
        raised = self.store.raised_alerts(list(by_id))
        for alert in alerts_due((_watched(r) for r in rows), raised, now, self.leads):
            if self._raise(by_id[alert.ticket_id], alert, now):
                if alert.stage == "breached":
                    report.breached += 1
                else:
                    report.due_soon += 1

    def _raise(self, ticket: TicketRow, alert: DueAlert, now: datetime) -> bool:
        address = self.settings.watcher.alert_address
        outgoing = None
        if address:
            facts = AlertFacts(ticket.reference, ticket.subject, ticket.requester, ticket.priority,
                               ticket.request_type, ticket.received_at, ticket.due_at, alert.stage)
            outgoing = build_alert(facts, self.settings, new_message_id(self._domain), now)
        assert ticket.id is not None
        if not self.store.record_alert(ticket.id, alert.stage, alert.due_at, outgoing, now):
            return False
        log.warning(
            "deadline %s ticket=%s priority=%d due=%s alert=%s",
            "breached" if alert.stage == "breached" else "due soon",
            ticket.reference,
            ticket.priority,
            alert.due_at.isoformat(),
            f"queued to {address} message-id=<{outgoing.message_id}>" if outgoing
            else "logged only (watcher.alert_address is empty)",
        )
        return True


def _watched(row: TicketRow) -> WatchedTicket:
    assert row.id is not None
    return WatchedTicket(row.id, row.reference, Priority(row.priority), row.due_at, row.status, row.first_response_at)

