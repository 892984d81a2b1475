"""First-response figures per priority and per request type, for the report command; pure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .acknowledgement import PRIORITY_NAMES
from .model import RequestType


@dataclass(frozen=True)
class TicketTimes:
    """The part of a ticket the report reads."""

    priority: int
    request_type: str
    received_at: datetime
    due_at: datetime
    first_response_at: datetime | None
    status: str = "open"


@dataclass(frozen=True)
class GroupFigures:
    """One line of the report.

    ``met_target``: first response at or before the deadline. ``missed_target``: a first
    response after it, or none and the deadline passed (closed tickets included).
    ``overdue_now``: open, unanswered, past the deadline. Times to first response are real
    elapsed time from arrival, over the tickets that have one; the 90th percentile is the
    nearest-rank one (the smallest time that at least 90% of responses took no longer than).
    """

    group: str
    tickets: int
    responded: int
    met_target: int
    missed_target: int
    overdue_now: int
    median_response: timedelta | None
    p90_response: timedelta | None

    def as_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "tickets": self.tickets,
            "responded": self.responded,
            "met_target": self.met_target,
            "missed_target": self.missed_target,
            "overdue_now": self.overdue_now,
            "median_response_minutes": _minutes(self.median_response),
            "p90_response_minutes": _minutes(self.p90_response),
        }


@dataclass(frozen=True)
class Report:
    total: GroupFigures
    by_priority: tuple[GroupFigures, ...]
    by_type: tuple[GroupFigures, ...]


def build_report(tickets: Iterable[TicketTimes], now: datetime) -> Report:
    """Every priority and every request type gets a line, also when it has no tickets."""
    rows = list(tickets)
    return Report(
        total=figures("all", rows, now),
        by_priority=tuple(
            figures(f"P{p} {PRIORITY_NAMES[p]}", [t for t in rows if t.priority == p], now) for p in (1, 2, 3, 4)
        ),
        by_type=tuple(figures(rt.value, [t for t in rows if t.request_type == rt.value], now) for rt in RequestType),
    )


def figures(group: str, rows: Sequence[TicketTimes], now: datetime) -> GroupFigures:
    times = sorted(t.first_response_at - t.received_at for t in rows if t.first_response_at is not None)
    met = sum(1 for t in rows if t.first_response_at is not None and t.first_response_at <= t.due_at)
    late = sum(1 for t in rows if t.first_response_at is not None and t.first_response_at > t.due_at)
    unanswered_past = [t for t in rows if t.first_response_at is None and t.due_at <= now]
    return GroupFigures(
        group=group,
        tickets=len(rows),
        responded=len(times),
        met_target=met,
        missed_target=late + len(unanswered_past),
        overdue_now=sum(1 for t in unanswered_past if t.status == "open"),
        median_response=_median(times),
        p90_response=times[math.ceil(0.9 * len(times)) - 1] if times else None,
    )


def format_report(report: Report, heading: str) -> str:
    """The report as a table for people."""
    header = (f"{'':<20} {'tickets':>7} {'responded':>9} {'met target':>11} {'missed':>6} {'median':>8} {'p90':>8} "
              f"{'overdue now':>11}")
    lines = [heading, "", header]
    for i, group in enumerate((report.total, *report.by_priority, *report.by_type)):
        if i in (1, 1 + len(report.by_priority)):
            lines.append("")
        met = f"{group.met_target}" + (f" ({_share(group.met_target, group.met_target + group.missed_target)})"
                                       if group.met_target + group.missed_target else "")
        lines.append(
            f"{group.group:<20} {group.tickets:>7} {group.responded:>9} {met:>11} {group.missed_target:>6} "
            f"{format_span(group.median_response):>8} {format_span(group.p90_response):>8} {group.overdue_now:>11}"
        )
    return "\n".join(lines)


def format_span(value: timedelta | None) -> str:
    """"-", "9m", "3h 10m", "2d 4h"."""
    if value is None:
        return "-"
    minutes = int(value.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _median(times: Sequence[timedelta]) -> timedelta | None:
    if not times:
        return None
    return timedelta(seconds=statistics.median(t.total_seconds() for t in times))


def _share(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%"


def _minutes(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds() / 60, 1)
