"""The composition root: builds the application's parts from settings, and nothing else does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock, SystemClock
from .config import Settings, database_url, read_secret
from .delivery import OutboxDelivery, Sender, claim_lease
from .idle import IdleWatcher
from .imap_inbox import ImapClientFactory, ImapInbox
from .parse_workers import ParseOutcome, ParseWorkers
from .pipeline import Processor
from .poller import Poller
from .smtp_sender import SmtpSender
from .store import Store
from .watcher import DeadlineWatcher


@dataclass
class App:
    settings: Settings
    clock: Clock
    store: Store
    processor: Processor
    stop: threading.Event = field(default_factory=threading.Event)
    _sender: Sender | None = None
    _poller: Poller | None = None
    _imap_client: ImapClientFactory | None = None
    _command_parser: ParseWorkers | None = None

    def inbox(self) -> ImapInbox:
        """A new, unconnected IMAP inbox; reading the password may raise ConfigError."""
        return ImapInbox(self.settings.imap, read_secret(self.settings, "imap"), self._imap_client)

    def idle_watcher(self, wake: Callable[[str], None]) -> IdleWatcher:
        """Waits for new mail with IDLE on a read-only connection of its own and calls ``wake``."""

        def watching_inbox() -> ImapInbox:
            return ImapInbox(self.settings.imap, read_secret(self.settings, "imap"), self._imap_client, read_only=True)

        return IdleWatcher(watching_inbox, wake, self.settings.imap, self.stop)

    def sender(self) -> Sender:
        if self._sender is None:
            self._sender = SmtpSender(self.settings.smtp, read_secret(self.settings, "smtp"))
        return self._sender

    def delivery(self) -> OutboxDelivery:
        return OutboxDelivery(self.store, self.sender(), self.clock, self.settings.outbox, stop=self.stop,
                              connections=self.settings.smtp.connections,
                              lease=claim_lease(self.settings.smtp.timeout_seconds,
                                                self.settings.smtp.data_timeout_seconds))

    def watcher(self) -> DeadlineWatcher:
        """The deadline watcher: raises due-soon and breached alerts into the outbox."""
        return DeadlineWatcher(self.store, self.settings, self.clock)

    def poller(self) -> Poller:
        """The one poller of this app; it keeps its IMAP connection between cycles."""
        if self._poller is None:
            # Read both secrets now, so a missing one is a config error at start, not a log line later.
            read_secret(self.settings, "imap")
            workers = self.settings.workers
            parsers = self._parse_workers(workers.parser_processes) if workers.parser_processes else None
            self._poller = Poller(self.inbox, self.store, self.processor, self.delivery(), self.settings.imap, self.stop,
                                  parsers)
        return self._poller

    def parse_guarded(self, raw: bytes) -> ParseOutcome | None:
        """Parse one message for a command (ingest, quarantine retry, explain) as the daemon
        does: in a parser process, given up after workers.parse_timeout_seconds, so a message
        that hangs the parser cannot hang the command. None: parse in line (no parser
        processes configured, or a message over the size limit, which is not parsed at all)."""
        workers = self.settings.workers
        if not workers.parser_processes or len(raw) > self.settings.imap.max_message_bytes:
            return None
        if self._command_parser is None:
            self._command_parser = self._parse_workers(1)
        return next(iter(self._command_parser.parse_all([raw])))

    def _parse_workers(self, processes: int) -> ParseWorkers:
        workers = self.settings.workers
        return ParseWorkers(processes, workers.parse_timeout_seconds, workers.parser_memory_mb * 2**20)

    def close(self) -> None:
        if self._command_parser is not None:
            self._command_parser.close()
            self._command_parser = None
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        self.store.close()


def build_app(
    settings: Settings, clock: Clock | None = None, sender: Sender | None = None,
    imap_client: ImapClientFactory | None = None,
) -> App:
    """Everything wired from settings; ``clock``, ``sender`` and the IMAP client may be replaced
    (tests, replays)."""
    from datetime import timedelta

    clock = clock or SystemClock()
    store = Store.from_url(
        database_url(settings),
        settings.support.reference_prefix,
        give_up_after=timedelta(hours=settings.outbox.give_up_after_hours),
    )
    try:
        store.upgrade_schema()
    except BaseException:
        store.close()
        raise
    return App(settings=settings, clock=clock, store=store, processor=Processor(store, settings, clock), _sender=sender,
               _imap_client=imap_client)
