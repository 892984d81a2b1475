"""Computes response deadlines from an arrival time and the service-level policy; pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from .config import WEEKDAY_NAMES, Settings
from .model import Priority, RequestType

ClockKind = Literal["24x7", "business"]

# A calendar with no working day in ten years is a configuration mistake, not a deadline.
_MAX_DAYS_SCANNED = 3660


@dataclass(frozen=True)
class Target:
    """How long the first response may take, and on which clock that time runs."""

    duration: timedelta
    clock: ClockKind


@dataclass(frozen=True)
class BusinessCalendar:
    """When the business clock runs: whole working days in a time zone, minus holidays."""

    timezone: ZoneInfo
    working_days: frozenset[int]  # 0 is Monday, as date.weekday() counts
    holidays: frozenset[date] = frozenset()

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_days and day not in self.holidays


@dataclass(frozen=True)
class ServicePolicy:
    """The targets for each priority and request type, and the calendar they count on."""

    priority_targets: dict[Priority, Target]
    standard_support: Target
    calendar: BusinessCalendar

    def target_for(self, priority: Priority, request_type: RequestType) -> Target:
        """Priority 1 always runs on its own short target; otherwise the request type decides
        for standard support (its promise is counted in business time), and the priority that
        staff set decides for every other type."""
        if priority == Priority.URGENT:
            return self.priority_targets[Priority.URGENT]
        if request_type == RequestType.STANDARD:
            return self.standard_support
        return self.priority_targets[priority]


def policy_from_settings(settings: Settings) -> ServicePolicy:
    t = settings.targets
    minutes = (t.priority_1_minutes, t.priority_2_minutes, t.priority_3_minutes, t.priority_4_minutes)
    return ServicePolicy(
        priority_targets={
            p: Target(timedelta(minutes=m), "24x7") for p, m in zip(Priority, minutes, strict=True)
        },
        standard_support=Target(timedelta(hours=t.standard_support_business_hours), "business"),
        calendar=BusinessCalendar(
            timezone=ZoneInfo(settings.calendar.timezone),
            working_days=frozenset(WEEKDAY_NAMES.index(d) for d in settings.calendar.working_days),
            holidays=frozenset(settings.calendar.holidays),
        ),
    )


def due_at(arrival: datetime, target: Target, calendar: BusinessCalendar) -> datetime:
    """When the first response is due, in UTC.

    On the business clock, time counts only on working days (whole days, midnight to
    midnight in the calendar's time zone). Elapsed time is real time, so a day with a
    daylight-saving change counts 23 or 25 hours.
    """
    if arrival.tzinfo is None:
        raise ValueError("arrival must be timezone-aware")
    arrival = arrival.astimezone(UTC)
    if target.clock == "24x7":
        return arrival + target.duration
    remaining = target.duration
    cursor = arrival
    for _ in range(_MAX_DAYS_SCANNED):
        local_day = cursor.astimezone(calendar.timezone).date()
        day_end = _start_of_day(local_day + timedelta(days=1), calendar.timezone)
        if calendar.is_working_day(local_day):
            available = day_end - cursor
            if remaining <= available:
                return cursor + remaining
            remaining -= available
        cursor = day_end
    raise ValueError("the business calendar has no working day within ten years")


def _start_of_day(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=zone).astimezone(UTC)
