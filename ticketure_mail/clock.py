"""The one place that reads the wall clock; everything else is handed a Clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to: for tests and for replaying a given arrival time."""

    def __init__(self, start: datetime) -> None:
        self._now = as_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = as_utc(instant)


def as_utc(instant: datetime) -> datetime:
    """The same instant in UTC; a naive value is taken to be UTC already (how SQLite returns it)."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def iso_utc(instant: datetime) -> str:
    """``2026-12-03T15:00:00Z``: how instants are written for people and in JSON (to the second)."""
    return as_utc(instant).isoformat(timespec="seconds").replace("+00:00", "Z")
