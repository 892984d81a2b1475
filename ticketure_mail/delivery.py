"""Sends what the outbox holds: retries temporary failures with backoff, gives up on permanent ones."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from .clock import Clock
from .config import OutboxSettings
from .smtp_sender import Envelope, SendResult, SendStatus, SmtpUnavailable
from .store import OutboxItem, Store

log = logging.getLogger(__name__)

_MAX_BACKOFF = timedelta(hours=1)
# Rows are claimed a few at a time, for a lease another sender respects; a dead sender's rows
# come back when it runs out. A sender still at work renews the lease on its remaining rows
# once half of it is spent, and never sends a row whose claim it lost.
_CLAIM_CHUNK = 10
_CLAIM_LEASE = timedelta(minutes=5)


def claim_lease(smtp_timeout_seconds: float, data_timeout_seconds: float) -> timedelta:
    """A lease whose half outlasts any one message's SMTP transaction (bounded by the data
    timeout) and a reconnection (by a few plain timeouts), so a renewal is always in time."""
    return max(_CLAIM_LEASE, timedelta(seconds=smtp_timeout_seconds * 20),
               timedelta(seconds=data_timeout_seconds * 3))


def _pid_alive(owner: str) -> bool:
    """Whether the process named in a claim owner ("host:pid:run") still runs on this host."""
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


class SenderSession(Protocol):
    def send(self, envelope: Envelope) -> SendResult: ...


class Sender(Protocol):
    def session(self) -> AbstractContextManager[SenderSession]: ...


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    unavailable: bool = False
    errors: list[str] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        self.sent += other.sent
        self.retrying += other.retrying
        self.failed += other.failed
        self.unavailable = self.unavailable or other.unavailable
        self.errors.extend(other.errors)


def next_attempt(attempts_so_far: int, now: datetime, settings: OutboxSettings) -> datetime:
    """Exponential backoff: first_retry, doubled per attempt, at most an hour apart."""
    delay = timedelta(seconds=settings.first_retry_seconds) * (2 ** min(attempts_so_far, 16))
    return now + min(delay, _MAX_BACKOFF)


class OutboxDelivery:
    """The step that turns pending outbox rows into sent, retrying or failed ones."""

    def __init__(self, store: Store, sender: Sender, clock: Clock, settings: OutboxSettings, batch_size: int = 100,
                 stop: threading.Event | None = None, connections: int = 1, lease: timedelta = _CLAIM_LEASE):
        self.store = store
        self.sender = sender
        self.clock = clock
        self.settings = settings
        self.batch_size = batch_size
        self.connections = connections
        # Set by a signal: the message in flight is finished and recorded, the rest wait.
        self.stop = stop or threading.Event()
        self._outage_since: datetime | None = None
        self._outage_lock = threading.Lock()
        # The poll cycle, the sender thread and the deadline watcher may all ask for a run: two
        # runs at once would read the same due rows and send them twice.
        self._lock = threading.Lock()
        self.lease = lease
        # Who holds a claim: host, process and this delivery step.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._reclaimed = False

    def _take_back_dead_claims(self) -> None:
        """Rows held by a process of this host that no longer runs (kill -9, a crash) are sent
        now rather than when their lease runs out. Other hosts' claims wait for the lease."""
        host = socket.gethostname()
        dead = [o for o in self.store.claim_owners(f"{host}:") if o != self.owner and not _pid_alive(o)]
        released = self.store.release_claims_of(dead)
        if released:
            log.warning("took back %d outbox row(s) claimed by a process that is gone (%s)", released, ", ".join(dead))

    def deliver_due(self) -> DeliveryReport:
        """Send every row that is due, until none is left or the relay is down, over up to
        ``connections`` SMTP connections at once. Each row is marked the moment its reply
        arrives, so a crash can repeat at most the one message in flight on each connection."""
        with self._lock:
            if not self._reclaimed:
                self._take_back_dead_claims()
                self._reclaimed = True
            if self.connections == 1:
                return self._run_connection()
            # Each connection waits on the relay's replies and on its turn to record them; the
            # others send meanwhile. They claim rows of their own, so none is sent twice.
            outcomes: list[DeliveryReport | Exception] = []

            def run() -> None:
                try:
                    outcomes.append(self._run_connection())
                except Exception as exc:  # raised below, in the caller's thread, as with one connection
                    outcomes.append(exc)

            threads = [threading.Thread(target=run, name=f"smtp-{n}", daemon=True) for n in range(self.connections)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            report = DeliveryReport()
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome
                report.add(outcome)
            return report

    def _run_connection(self) -> DeliveryReport:
        report = DeliveryReport()
        # A row handled in the last round and due again (a clock that does not move) is not
        # tried twice in one run. Only the last round is remembered: a run through a large
        # backlog keeps its memory flat.
        previous: set[int] = set()
        with self.sender.session() as session:
            while True:
                claimed_at = self.clock.now()
                due = self.store.claim_due_outbox(
                    claimed_at, min(self.batch_size, _CLAIM_CHUNK), self.lease, self.owner
                )
                items = [i for i in due if i.id not in previous]
                if not items:
                    return report
                previous = {i.id for i in due}
                if not self._deliver_batch(session, items, claimed_at, report):
                    return report

    def deliver_claimed(self, session: SenderSession, items: list[OutboxItem], claimed_at: datetime) -> DeliveryReport:
        """Send rows this sender claimed at ``claimed_at`` (what each connection does after each claim)."""
        report = DeliveryReport()
        self._deliver_batch(session, items, claimed_at, report)
        return report

    def _deliver_batch(self, session: SenderSession, items: list[OutboxItem], claimed_at: datetime,
                       report: DeliveryReport) -> bool:
        held_until = claimed_at + self.lease
        lost: set[int] = set()
        for index, item in enumerate(items):
            if self.stop.is_set():
                self.store.release_claims([i.id for i in items[index:] if i.id not in lost])
                return False
            now = self.clock.now()
            if now >= held_until - self.lease / 2:
                # A slow relay has used half the lease: renew it on the rows left, and learn
                # which of them another sender took after the lease ran out.
                held_until = now + self.lease
                left = [i.id for i in items[index:] if i.id not in lost]
                lost.update(set(left) - self.store.renew_claims(left, self.owner, held_until))
            if item.id in lost:
                log.warning("outbox %d skipped: its claim ran out and another sender took it", item.id)
                continue
            try:
                result = session.send(Envelope(item.id, item.envelope_sender, item.recipient, item.data))
            except SmtpUnavailable as exc:
                report.unavailable = True
                report.errors.append(str(exc))
                self._note_outage(str(exc), len(items) - index)
                ours = [i for i in items[index:] if i.id not in lost]
                self._expire(ours)
                self.store.release_claims([i.id for i in ours], f"relay unavailable: {exc}")
                return False
            if self._outage_since is not None:
                self._note_recovery()
            self._record(item, result, report)
        return True

    def _record(self, item: OutboxItem, result: SendResult, report: DeliveryReport) -> None:
        now = self.clock.now()
        if result.status == SendStatus.SENT:
            self.store.mark_sent(item, now)
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

    def _note_recovery(self) -> None:
        with self._outage_lock:
            if self._outage_since is not None:
                log.warning("SMTP relay reachable again after an outage since %s", self._outage_since.isoformat())
                self._outage_since = None

    def _note_outage(self, detail: str, waiting: int) -> None:
        # One line per outage, not one per message and cycle (nor per connection).
        with self._outage_lock:
            if self._outage_since is not None:
                return
            self._outage_since = self.clock.now()
            log.warning("SMTP relay unavailable (%s); %d message(s) wait in the outbox", detail, waiting)

    def _expire(self, items: list[OutboxItem]) -> None:
        now = self.clock.now()
        for item in items:
            if now >= item.give_up_at:
                self.store.mark_failed(item.id, "gave up: SMTP relay unavailable until the deadline")
                log.warning("failed %s message-id=<%s> outbox=%d: relay unavailable past its deadline",
                            item.kind, item.message_id, item.id)
