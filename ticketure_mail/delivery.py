"""Sends what the outbox holds: retries temporary failures with backoff, gives up on permanent ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from .clock import Clock
from .config import OutboxSettings
from .smtp_sender import Envelope, SendResult, SendStatus, SmtpUnavailable
from .store import OutboxItem, Store

log = logging.getLogger(__name__)

_MAX_BACKOFF = timedelta(hours=1)


class Sender(Protocol):
    def send_batch(self, envelopes: list[Envelope]) -> list[SendResult]: ...


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    unavailable: bool = False
    errors: list[str] = field(default_factory=list)


def next_attempt(attempts_so_far: int, now: datetime, settings: OutboxSettings) -> datetime:
    """Exponential backoff: first_retry, doubled per attempt, at most an hour apart."""
    delay = timedelta(seconds=settings.first_retry_seconds) * (2 ** min(attempts_so_far, 16))
    return now + min(delay, _MAX_BACKOFF)


class OutboxDelivery:
    """The step that turns pending outbox rows into sent, retrying or failed ones."""

    def __init__(self, store: Store, sender: Sender, clock: Clock, settings: OutboxSettings, batch_size: int = 100):
        self.store = store
        self.sender = sender
        self.clock = clock
        self.settings = settings
        self.batch_size = batch_size
        self._outage_since: datetime | None = None

    def deliver_due(self) -> DeliveryReport:
        """Send every row that is due, batch by batch, until none is left or the relay is down."""
        report = DeliveryReport()
        seen: set[int] = set()
        while True:
            now = self.clock.now()
            items = [i for i in self.store.due_outbox(now, self.batch_size) if i.id not in seen]
            if not items:
                return report
            seen.update(i.id for i in items)
            if not self._deliver_batch(items, report):
                return report

    def _deliver_batch(self, items: list[OutboxItem], report: DeliveryReport) -> bool:
        envelopes = [Envelope(i.id, i.envelope_sender, i.recipient, i.data) for i in items]
        try:
            results = self.sender.send_batch(envelopes)
        except SmtpUnavailable as exc:
            report.unavailable = True
            report.errors.append(str(exc))
            self._note_outage(str(exc), len(items))
            self._expire(items)
            return False
        if self._outage_since is not None:
            log.warning("SMTP relay reachable again after an outage since %s", self._outage_since.isoformat())
            self._outage_since = None
        by_id = {i.id: i for i in items}
        for result in results:
            self._record(by_id[result.key], result, report)
        return True

    def _record(self, item: OutboxItem, result: SendResult, report: DeliveryReport) -> None:
        now = self.clock.now()
        if result.status == SendStatus.SENT:
            self.store.mark_sent(item.id, now)
            report.sent += 1
            log.info("sent %s message-id=<%s> to=%s outbox=%d", item.kind, item.message_id, item.recipient, item.id)
            return
        retry_at = next_attempt(item.attempts, now, self.settings)
        out_of_time = retry_at > item.give_up_at or item.attempts + 1 >= self.settings.max_attempts
        if result.status == SendStatus.PERMANENT or out_of_time:
            why = result.detail if result.status == SendStatus.PERMANENT else f"gave up: {result.detail}"
            self.store.mark_failed(item.id, why)
            report.failed += 1
            log.warning("failed %s message-id=<%s> to=%s outbox=%d: %s",
                        item.kind, item.message_id, item.recipient, item.id, why)
            return
        self.store.mark_retry(item.id, result.detail, retry_at)
        report.retrying += 1
        log.info("will retry %s message-id=<%s> to=%s outbox=%d at %s: %s",
                 item.kind, item.message_id, item.recipient, item.id, retry_at.isoformat(), result.detail)

    def _note_outage(self, detail: str, waiting: int) -> None:
        # One line per outage, not one per message and cycle.
        if self._outage_since is None:
            self._outage_since = self.clock.now()
            log.warning("SMTP relay unavailable (%s); %d message(s) wait in the outbox", detail, waiting)

    def _expire(self, items: list[OutboxItem]) -> None:
        now = self.clock.now()
        for item in items:
            if now >= item.give_up_at:
                self.store.mark_failed(item.id, "gave up: SMTP relay unavailable until the deadline")
                log.warning("failed %s message-id=<%s> outbox=%d: relay unavailable past its deadline",
                            item.kind, item.message_id, item.id)
