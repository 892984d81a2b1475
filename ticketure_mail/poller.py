"""One poll cycle: fetch new mail in batches, process each message, mark it done, send the outbox."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from .config import ImapSettings
from .decisions import Source
from .delivery import DeliveryReport, OutboxDelivery
from .errors import ImapError, TransientError
from .imap_inbox import ImapInbox
from .model import Outcome
from .parse_workers import ParseOutcome, ParseWorkers
from .pipeline import Processor
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    outcomes: dict[str, int] = field(default_factory=dict)
    fetched: int = 0
    imap_error: str = ""
    storage_error: str = ""
    stopped: bool = False
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    @property
    def processed(self) -> int:
        return sum(self.outcomes.values())

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1

    def outcome_counts(self) -> str:
        """``created 3, quarantined 1``: the cycle's outcomes, as a log line or a command says them."""
        return ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items()))


class Poller:
    """Owns the IMAP connection across cycles and reconnects when it breaks.

    The acknowledgements of a batch go out as soon as the batch is committed, not after the
    whole backlog: by ``send_now`` when set (the daemon wakes its sender thread, which sends
    while the next batch is read), else by delivering in line (``poll --once``, tests).
    """

    def __init__(
        self,
        inbox_factory: Callable[[], ImapInbox],
        store: Store,
        processor: Processor,
        delivery: OutboxDelivery,
        settings: ImapSettings,
        stop: threading.Event | None = None,
        parsers: ParseWorkers | None = None,
    ) -> None:
        self._inbox_factory = inbox_factory
        self._inbox: ImapInbox | None = None
        self.store = store
        self.processor = processor
        self.delivery = delivery
        self.settings = settings
        self.stop = stop or threading.Event()
        # Without parser processes each message is parsed in line, in this thread.
        self.parsers = parsers
        self.send_now: Callable[[], None] | None = None
        self._imap_down = False

    def cycle(self) -> CycleReport:
        """Poll once, then send what is due. Never raises for server or storage faults."""
        report = CycleReport()
        try:
            self._poll(report)
        except ImapError as exc:
            report.imap_error = str(exc)
            self._drop_connection()
            if not self._imap_down:
                log.warning("IMAP unavailable (tried again at the next cycle of a running daemon): %s", exc)
            self._imap_down = True
        except TransientError as exc:
            report.storage_error = str(exc)
            log.warning("storage unavailable, messages stay on the server for the next cycle: %s", exc)
        # Also sends what is due for a retry, and what the deadline watcher queued.
        self._send(report)
        return report

    def _send(self, report: CycleReport) -> None:
        if self.stop.is_set():
            return
        if self.send_now is not None:
            self.send_now()
        else:
            report.delivery.add(self.delivery.deliver_due())

    def close(self) -> None:
        self._drop_connection()
        if self.parsers is not None:
            self.parsers.close()

    def _drop_connection(self) -> None:
        if self._inbox is not None:
            self._inbox.close()
            self._inbox = None

    def _connected_inbox(self) -> tuple[ImapInbox, bool]:
        """The inbox, and whether it was connected just now (not kept from an earlier cycle)."""
        if self._inbox is not None and self._inbox.connected:
            return self._inbox, False
        inbox = self._inbox_factory()
        inbox.connect()
        self._inbox = inbox
        if self._imap_down:
            log.warning("IMAP reachable again")
            self._imap_down = False
        return inbox, True

    def _new_uids(self) -> tuple[ImapInbox, list[int]]:
        inbox, fresh = self._connected_inbox()
        try:
            return inbox, inbox.new_uids(self.store.last_uid(inbox.folder, inbox.uidvalidity))
        except ImapError:
            if fresh:
                raise
        # With IDLE, cycles can be minutes apart, and a connection kept that long may have been
        # dropped (a server restart, an idle timeout): one fresh try before calling IMAP down.
        self._drop_connection()
        inbox, _ = self._connected_inbox()
        return inbox, inbox.new_uids(self.store.last_uid(inbox.folder, inbox.uidvalidity))

    def _poll(self, report: CycleReport) -> None:
        inbox, uids = self._new_uids()
        size = self.settings.batch_size
        for start in range(0, len(uids), size):
            if self.stop.is_set():
                report.stopped = True
                return
            carry_on = self._poll_batch(inbox, uids[start : start + size], report)
            self._send(report)
            if not carry_on:
                return

    def _poll_batch(self, inbox: ImapInbox, batch: list[int], report: CycleReport) -> bool:
        """Process one batch; True if the next batch may follow."""
        folder, validity = inbox.folder, inbox.uidvalidity
        fetched = inbox.fetch(batch, self.settings.max_message_bytes)
        report.fetched += len(fetched)
        done: list[int] = []
        quarantined: list[int] = []
        carry_on = True
        parsed: Iterator[ParseOutcome | None] = (
            self.parsers.parse_all([m.raw for m in fetched]) if self.parsers else itertools.repeat(None)
        )
        try:
            for message, outcome in zip(fetched, parsed):
                if self.stop.is_set():
                    report.stopped = True
                    carry_on = False
                    break
                source = Source("imap", folder, validity, message.uid)
                if message.raw is None:
                    result = self.processor.quarantine_oversized(source, message.size, message.internal_date)
                else:
                    result = self.processor.process(message.raw, source, message.internal_date, outcome)
                report.count(result.outcome)
                (quarantined if result.outcome == Outcome.QUARANTINED else done).append(message.uid)
        finally:
            close = getattr(parsed, "close", None)
            if close is not None:
                close()  # the messages still being parsed are waited for and dropped
            # Whatever was committed is marked on the server, even if a later message failed.
            inbox.mark_processed(done)
            if quarantined:
                inbox.move(quarantined, self.settings.quarantine_folder)
            self._advance(folder, validity, batch, {*done, *quarantined})
        return carry_on

    def _advance(self, folder: str, validity: int, batch: list[int], handled: set[int]) -> None:
        """Move the high-water mark over the unbroken run of handled UIDs only: a UID the server
        left out of a FETCH answer is asked for again next cycle (the ledger absorbs repeats)."""
        high_water = None
        for uid in batch:
            if uid not in handled:
                break
            high_water = uid
        if high_water is None:
            return
        try:
            self.store.set_last_uid(folder, validity, high_water)
        except SQLAlchemyError as exc:
            log.warning("cannot record mailbox position (the ledger prevents repeats): %s", exc.__class__.__name__)
