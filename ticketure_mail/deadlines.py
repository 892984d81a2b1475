"""Computes response deadlines from an arrival time and the service-level policy; pure."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from .config import WEEKDAY_NAMES, Settings, TargetSetting, parse_clock_time, parse_duration
from .model import Priority, RequestType

ClockKind = Literal["24x7", "business"]
# One day's opening hours: (opens, closes) pairs in local time; a closing time of None is the
# midnight that ends the day ("24:00").
DayHours = tuple[tuple[time, time | None], ...]
WHOLE_DAY: DayHours = ((time(0, 0), None),)

# A calendar with no open hour in ten years is a configuration mistake, not a deadline.
_MAX_DAYS_SCANNED = 3660


@dataclass(frozen=True)
class Target:
    """How long the first response may take, and on which clock that time runs."""

    duration: timedelta
    clock: ClockKind


@dataclass(frozen=True)
class BusinessCalendar:
    """When the business clock runs: opening hours on working days in a time zone, minus holidays."""

    timezone: ZoneInfo
    working_days: frozenset[int]  # 0 is Monday, as date.weekday() counts
    holidays: frozenset[date] = frozenset()
    # A country's public holidays (public_holidays.PublicHolidays), or any other set of dates.
    public_holidays: Container[date] = frozenset()
    # Indexed by weekday; a day that is missing or has no hours is open all day.
    opening_hours: tuple[DayHours, ...] = ()

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_days and day not in self.holidays and day not in self.public_holidays

    def hours_of(self, weekday: int) -> DayHours:
        if weekday < len(self.opening_hours) and self.opening_hours[weekday]:
            return self.opening_hours[weekday]
        return WHOLE_DAY

    def open_periods(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's open periods as UTC instants; none on a day off."""
        if not self.is_working_day(day):
            return []
        periods = []
        for opens, closes in self.hours_of(day.weekday()):
            start = _instant(day, opens, self.timezone)
            end = _instant(day + timedelta(days=1), time(0, 0), self.timezone) if closes is None else (
                _instant(day, closes, self.timezone))
            if end > start:
                periods.append((start, end))
        return periods


@dataclass(frozen=True)
class ServicePolicy:
    """The targets for each priority and request type, and the calendar they count on."""

    priority_targets: dict[Priority, Target]
    type_targets: dict[RequestType, Target]
    calendar: BusinessCalendar
    # Priority 3 is also what an untriaged ticket carries; see target_for.
    untriaged_priority: Priority = field(default=Priority.NORMAL)

    def target_for(self, priority: Priority, request_type: RequestType, *, triaged: bool = False) -> Target:
        """The target a ticket is held to.

        - Priority 1 (the urgency marker, or staff) always runs on its own short target.
        - A priority that someone decided runs on that priority's target: staff setting it
          (``triaged``), or any priority other than 3, which only a person can have given.
        - Otherwise the ticket is untriaged, priority 3 is only a placeholder, and the request
          type's target applies: standard support's 24 business hours, by default.
        """
        if priority == Priority.URGENT:
            return self.priority_targets[Priority.URGENT]
        if triaged or priority != self.untriaged_priority:
            return self.priority_targets[priority]
        return self.type_targets.get(request_type, self.priority_targets[priority])

    def deadline(
        self, arrival: datetime, priority: Priority, request_type: RequestType, *, triaged: bool = False
    ) -> datetime:
        return due_at(arrival, self.target_for(priority, request_type, triaged=triaged), self.calendar)


def target_from_setting(setting: TargetSetting) -> Target:
    return Target(parse_duration(setting.within), setting.clock)


def policy_from_settings(settings: Settings) -> ServicePolicy:
    t = settings.targets
    return ServicePolicy(
        priority_targets={
            Priority.URGENT: target_from_setting(t.priority_1),
            Priority.HIGH: target_from_setting(t.priority_2),
            Priority.NORMAL: target_from_setting(t.priority_3),
            Priority.LOW: target_from_setting(t.priority_4),
        },
        type_targets={
            RequestType.STANDARD: target_from_setting(t.standard),
            RequestType.WEB_REFINEMENT: target_from_setting(t.web_refinement),
            RequestType.PRODUCT_FEEDBACK: target_from_setting(t.product_feedback),
            RequestType.API_REQUEST: target_from_setting(t.api_request),
        },
        calendar=calendar_from_settings(settings),
    )


def calendar_from_settings(settings: Settings) -> BusinessCalendar:
    c = settings.calendar
    public: Container[date] = frozenset()
    if c.holiday_country:
        # Imported only when asked for: the holidays package takes a tenth of a second to load.
        from .public_holidays import PublicHolidays

        public = PublicHolidays(c.holiday_country, c.holiday_subdivision)
    return BusinessCalendar(
        timezone=ZoneInfo(c.timezone),
        working_days=frozenset(WEEKDAY_NAMES.index(d) for d in c.working_days),
        holidays=frozenset(c.holidays),
        public_holidays=public,
        opening_hours=tuple(_day_hours(getattr(c.opening_hours, name)) for name in WEEKDAY_NAMES),
    )


def _day_hours(texts: tuple[str, ...]) -> DayHours:
    times = [parse_clock_time(t) for t in texts]
    pairs = []
    for opens, closes in zip(times[0::2], times[1::2], strict=True):
        assert opens is not None, "the config check refuses 24:00 as an opening time"
        pairs.append((opens, closes))
    return tuple(pairs)


def due_at(arrival: datetime, target: Target, calendar: BusinessCalendar) -> datetime:
    """When the first response is due, in UTC.

    On the 24x7 clock: arrival plus the target. On the business clock, time counts only in
    the calendar's open periods (opening hours of working days that are not holidays, in
    its time zone): a request that arrives outside them starts counting at the next opening,
    one that arrives exactly at closing time too, and a deadline that uses up a period
    exactly is the closing time itself, not the next opening. Open time is real elapsed
    time, so a whole-day calendar counts a daylight-saving day as 23 or 25 hours, while
    "09:00 to 17:30" is 8.5 hours on any day.
    """
    if arrival.tzinfo is None:
        raise ValueError("arrival must be timezone-aware")
    arrival = arrival.astimezone(UTC)
    if target.clock == "24x7":
        return arrival + target.duration
    remaining = target.duration
    day = arrival.astimezone(calendar.timezone).date()
    for _ in range(_MAX_DAYS_SCANNED):
        for start, end in calendar.open_periods(day):
            if end <= arrival:
                continue
            start = max(start, arrival)
            available = end - start
            if remaining <= available:
                return start + remaining
            remaining -= available
        day += timedelta(days=1)
    raise ValueError("the business calendar has no open hour within ten years")


def _instant(day: date, clock_time: time, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as a UTC instant. A time that a daylight-saving change skips
    (01:30 on a spring-forward night in London) is read with the offset before the change."""
    return datetime.combine(day, clock_time, tzinfo=zone).astimezone(UTC)
