"""First-response figures, as tables: met and missed, median and nearest-rank 90th percentile, overdue."""

from datetime import UTC, datetime, timedelta

from ticketure_mail.reporting import TicketTimes, build_report, figures, format_span

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=2)


def ticket(minutes: int | None, target_minutes: int = 60, status: str = "open", priority: int = 2,
           request_type: str = "standard") -> TicketTimes:
    response = None if minutes is None else T0 + timedelta(minutes=minutes)
    return TicketTimes(priority, request_type, T0, T0 + timedelta(minutes=target_minutes), response, status)


def test_met_missed_and_overdue() -> None:
    rows = [
        ticket(30),  # met
        ticket(60),  # met: at the deadline counts
        ticket(61),  # missed
        ticket(None),  # unanswered, past due, open: missed and overdue now
        ticket(None, status="closed"),  # closed unanswered past due: missed, not overdue
        ticket(None, target_minutes=5 * 24 * 60),  # unanswered, not yet due: neither
    ]
    got = figures("g", rows, NOW)
    assert (got.tickets, got.responded, got.met_target, got.missed_target, got.overdue_now) == (6, 3, 2, 3, 1)


def test_median_and_p90() -> None:
    ten = [ticket(m) for m in (1, 2, 3, 4, 5, 6, 7, 8, 9, 100)]
    got = figures("g", ten, NOW)
    assert got.median_response == timedelta(minutes=5, seconds=30)  # the mean of the two middle ones
    assert got.p90_response == timedelta(minutes=9)  # nearest rank: the 9th of 10
    one = figures("g", [ticket(7)], NOW)
    assert one.median_response == one.p90_response == timedelta(minutes=7)
    none = figures("g", [ticket(None)], NOW)
    assert none.median_response is None and none.p90_response is None


def test_every_priority_and_type_has_a_line() -> None:
    report = build_report([ticket(5, priority=1, request_type="urgent"), ticket(None, request_type="api_request")], NOW)
    assert [g.group for g in report.by_priority] == ["P1 Urgent", "P2 High", "P3 Normal", "P4 Low"]
    assert [g.group for g in report.by_type] == ["standard", "urgent", "web_refinement", "product_feedback",
                                                 "api_request"]
    assert report.total.tickets == 2 and report.by_priority[1].tickets == 1 and report.by_type[4].overdue_now == 1


def test_format_span() -> None:
    assert [format_span(v) for v in (None, timedelta(minutes=9), timedelta(hours=3, minutes=5),
                                     timedelta(days=2, hours=4, minutes=59))] == ["-", "9m", "3h 05m", "2d 4h"]
