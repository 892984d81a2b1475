"""Priority x arrival time -> deadline, as a table."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ticketure_mail.config import settings_from_dict
from ticketure_mail.deadlines import BusinessCalendar, Target, due_at, policy_from_settings
from ticketure_mail.model import Priority, RequestType

LONDON = BusinessCalendar(ZoneInfo("Europe/London"), frozenset(range(5)), frozenset({date(2026, 12, 25)}))
NEW_YORK = BusinessCalendar(ZoneInfo("America/New_York"), frozenset(range(5)))
BUSINESS_DAY = Target(timedelta(hours=24), "business")
FIFTEEN = Target(timedelta(minutes=15), "24x7")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("arrival", "target", "calendar", "expected"),
    [
        # 24x7: plain addition, whatever the day.
        (utc(2026, 12, 5, 23, 50), FIFTEEN, LONDON, utc(2026, 12, 6, 0, 5)),
        # Thursday afternoon -> Friday afternoon.
        (utc(2026, 12, 3, 15, 0), BUSINESS_DAY, LONDON, utc(2026, 12, 4, 15, 0)),
        # Friday afternoon -> Monday afternoon (the weekend does not count).
        (utc(2026, 12, 4, 15, 0), BUSINESS_DAY, LONDON, utc(2026, 12, 7, 15, 0)),
        # Saturday -> the whole of Monday: due at the end of Monday.
        (utc(2026, 12, 5, 10, 0), BUSINESS_DAY, LONDON, utc(2026, 12, 8, 0, 0)),
        # Christmas Eve (Thursday) afternoon: Christmas is a holiday, so due Monday 28th.
        (utc(2026, 12, 24, 15, 0), BUSINESS_DAY, LONDON, utc(2026, 12, 28, 15, 0)),
        # Exactly midnight on a working day.
        (utc(2026, 12, 7, 0, 0), BUSINESS_DAY, LONDON, utc(2026, 12, 8, 0, 0)),
        # New York, Friday 16:00 EST (21:00 UTC) -> Monday 16:00 EST.
        (utc(2026, 12, 4, 21, 0), BUSINESS_DAY, NEW_YORK, utc(2026, 12, 7, 21, 0)),
        # London spring-forward Sunday is skipped; Friday 27 March 2026 12:00 GMT -> Monday 12:00 BST.
        (utc(2026, 3, 27, 12, 0), BUSINESS_DAY, LONDON, utc(2026, 3, 30, 11, 0)),
    ],
)
def test_due_at(arrival: datetime, target: Target, calendar: BusinessCalendar, expected: datetime) -> None:
    assert due_at(arrival, target, calendar) == expected


def test_due_at_refuses_a_naive_arrival() -> None:
    with pytest.raises(ValueError):
        due_at(datetime(2026, 12, 3, 12, 0), FIFTEEN, LONDON)


def test_default_policy_is_the_support_terms() -> None:
    settings = settings_from_dict({"imap": {"host": "h", "username": "u", "password_env": "X"}, "smtp": {"host": "h"}})
    policy = policy_from_settings(settings)
    assert policy.target_for(Priority.URGENT, RequestType.URGENT) == Target(timedelta(minutes=15), "24x7")
    assert policy.target_for(Priority.NORMAL, RequestType.STANDARD) == Target(timedelta(hours=24), "business")
    assert policy.target_for(Priority.HIGH, RequestType.WEB_REFINEMENT) == Target(timedelta(hours=1), "24x7")
    assert policy.target_for(Priority.NORMAL, RequestType.API_REQUEST) == Target(timedelta(days=3), "24x7")
    assert policy.target_for(Priority.LOW, RequestType.PRODUCT_FEEDBACK) == Target(timedelta(days=7), "24x7")
