"""Priority x arrival time -> deadline, as a table."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from ticketure_mail.config import settings_from_dict
from ticketure_mail.deadlines import BusinessCalendar, Target, due_at, policy_from_settings
from ticketure_mail.model import Priority, RequestType
from ticketure_mail.public_holidays import PublicHolidays

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


# --- opening hours, holidays, daylight saving -----------------------------------------------------

NINE_TO_HALF_FIVE = ((time(9, 0), time(17, 30)),)
WEEKDAYS_ONLY = tuple(NINE_TO_HALF_FIVE if d < 5 else () for d in range(7))
# London, Monday to Friday 09:00-17:30 (8.5 open hours a day); Christmas and the Boxing Day
# substitute (Monday 28 December 2026) are holidays.
LONDON_OFFICE = BusinessCalendar(
    ZoneInfo("Europe/London"), frozenset(range(5)), frozenset({date(2026, 12, 25), date(2026, 12, 28)}),
    opening_hours=WEEKDAYS_ONLY,
)
# New York, open every day 09:00-17:00, so that the Sunday of each daylight-saving change counts.
NEW_YORK_EVERY_DAY = BusinessCalendar(
    ZoneInfo("America/New_York"), frozenset(range(7)), opening_hours=(((time(9, 0), time(17, 0)),),) * 7,
)
# London open every day, whole days: the spring-forward Sunday has 23 hours.
LONDON_EVERY_DAY = BusinessCalendar(ZoneInfo("Europe/London"), frozenset(range(7)))
# A lunch break: 09:00-12:30 and 13:30-17:30.
LONDON_LUNCH = BusinessCalendar(
    ZoneInfo("Europe/London"), frozenset(range(5)),
    opening_hours=tuple(((time(9, 0), time(12, 30)), (time(13, 30), time(17, 30))) if d < 5 else () for d in range(7)),
)
BUSINESS = lambda **kw: Target(timedelta(**kw), "business")  # noqa: E731


@pytest.mark.parametrize(
    ("case", "arrival", "target", "calendar", "expected"),
    [
        # Friday evening: nothing counts until Monday 09:00; 8.5 + 8.5 + 7 hours -> Wednesday 16:00.
        ("friday evening", utc(2026, 12, 4, 19, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 9, 16, 0)),
        ("before opening", utc(2026, 12, 1, 7, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 3, 16, 0)),
        ("exactly at opening", utc(2026, 12, 1, 9, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 3, 16, 0)),
        # Closing time is already closed: counting starts at the next opening.
        ("exactly at closing", utc(2026, 12, 1, 17, 30), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 4, 16, 0)),
        ("a minute before closing", utc(2026, 12, 1, 17, 29), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 4, 15, 59)),
        # A deadline that uses a day up exactly is its closing time, not the next morning.
        ("deadline at closing", utc(2026, 12, 1, 9, 0), BUSINESS(hours=8, minutes=30), LONDON_OFFICE,
         utc(2026, 12, 1, 17, 30)),
        ("after closing, short target", utc(2026, 12, 1, 18, 0), BUSINESS(hours=1), LONDON_OFFICE,
         utc(2026, 12, 2, 10, 0)),
        # Thursday 24 December: 7.5 h, then Christmas, the weekend and Monday 28th off, 8.5 h Tuesday, 8 h Wednesday.
        ("before a holiday", utc(2026, 12, 24, 10, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 30, 17, 0)),
        ("on a holiday", utc(2026, 12, 25, 12, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 12, 31, 16, 0)),
        ("on a saturday", utc(2026, 12, 5, 12, 0), BUSINESS(hours=2), LONDON_OFFICE, utc(2026, 12, 7, 11, 0)),
        # Multi-day: 72 open hours are eight 8.5-hour days (68 h) and 4 h: Thursday of the next week.
        ("72 business hours", utc(2026, 12, 7, 9, 0), BUSINESS(hours=72), LONDON_OFFICE, utc(2026, 12, 17, 13, 0)),
        ("3 days around the clock", utc(2026, 12, 4, 19, 0), Target(timedelta(days=3), "24x7"), LONDON_OFFICE,
         utc(2026, 12, 7, 19, 0)),
        ("7 days around the clock", utc(2026, 3, 27, 12, 0), Target(timedelta(days=7), "24x7"), LONDON_OFFICE,
         utc(2026, 4, 3, 12, 0)),
        # London spring forward (Sunday 29 March 2026): Friday 12:00 GMT; 5.5 + 8.5 + 8.5 + 1.5 h;
        # Wednesday 10:30 BST is 09:30 UTC.
        ("London spring forward", utc(2026, 3, 27, 12, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 4, 1, 9, 30)),
        # London fall back (Sunday 25 October 2026): Friday 12:00 BST; Wednesday 10:30 GMT.
        ("London fall back", utc(2026, 10, 23, 11, 0), BUSINESS_DAY, LONDON_OFFICE, utc(2026, 10, 28, 10, 30)),
        # New York spring forward (Sunday 8 March 2026): Saturday 16:00 EST, 1 h that day, Sunday opens 09:00 EDT.
        ("New York spring forward", utc(2026, 3, 7, 21, 0), BUSINESS(hours=2), NEW_YORK_EVERY_DAY,
         utc(2026, 3, 8, 14, 0)),
        # New York fall back (Sunday 1 November 2026): Saturday 16:00 EDT, Sunday opens 09:00 EST.
        ("New York fall back", utc(2026, 10, 31, 20, 0), BUSINESS(hours=2), NEW_YORK_EVERY_DAY,
         utc(2026, 11, 1, 15, 0)),
        # Whole days count real time: the 23-hour Sunday passes 24 open hours at 13:00 BST on Sunday.
        ("whole day of 23 hours", utc(2026, 3, 28, 12, 0), BUSINESS_DAY, LONDON_EVERY_DAY, utc(2026, 3, 29, 12, 0)),
        # Whole days, Monday to Friday, across the New York change: Friday 16:00 EST -> Monday 16:00 EDT.
        ("New York whole days across the change", utc(2026, 3, 6, 21, 0), BUSINESS_DAY, NEW_YORK,
         utc(2026, 3, 9, 20, 0)),
        # Late evening in New York is already the next day in UTC; the local day is what counts.
        ("local day, not the UTC one", utc(2026, 12, 5, 2, 0), BUSINESS(hours=1), NEW_YORK, utc(2026, 12, 5, 3, 0)),
        ("in the lunch break", utc(2026, 12, 1, 12, 45), BUSINESS(hours=2), LONDON_LUNCH, utc(2026, 12, 1, 15, 30)),
        ("across the lunch break", utc(2026, 12, 1, 11, 30), BUSINESS(hours=4), LONDON_LUNCH, utc(2026, 12, 1, 16, 30)),
    ],
)
def test_due_at_in_opening_hours(case: str, arrival: datetime, target: Target, calendar: BusinessCalendar,
                                 expected: datetime) -> None:
    assert due_at(arrival, target, calendar) == expected, case


def test_public_holidays_from_the_holidays_package() -> None:
    england = BusinessCalendar(ZoneInfo("Europe/London"), frozenset(range(5)),
                               public_holidays=PublicHolidays("GB", "ENG"))
    # Christmas (Friday) and the Boxing Day substitute (Monday 28th) are both off.
    assert due_at(utc(2026, 12, 24, 15, 0), BUSINESS_DAY, england) == utc(2026, 12, 29, 15, 0)
    assert PublicHolidays("GB", "ENG").name(date(2026, 12, 28)) is not None
    united_states = BusinessCalendar(ZoneInfo("America/New_York"), frozenset(range(5)),
                                     public_holidays=PublicHolidays("US"))
    # Thanksgiving, Thursday 26 November 2026: Wednesday 15:00 EST -> Friday 15:00 EST.
    assert due_at(utc(2026, 11, 25, 20, 0), BUSINESS_DAY, united_states) == utc(2026, 11, 27, 20, 0)
    assert date(2026, 11, 26) in PublicHolidays("US") and date(2026, 11, 25) not in PublicHolidays("US")


def test_a_calendar_that_never_opens_is_refused() -> None:
    never = BusinessCalendar(ZoneInfo("UTC"), frozenset())
    with pytest.raises(ValueError, match="no open hour"):
        due_at(utc(2026, 12, 1, 9, 0), BUSINESS_DAY, never)


def test_calendar_from_the_config_keys() -> None:
    settings = settings_from_dict({
        "imap": {"host": "h", "username": "u", "password_env": "X"}, "smtp": {"host": "h"},
        "calendar": {"timezone": "Europe/London", "holidays": [date(2026, 12, 25), date(2026, 12, 28)],
                     "opening_hours": {d: ["09:00", "17:30"] for d in ("mon", "tue", "wed", "thu", "fri")}},
    })
    policy = policy_from_settings(settings)
    assert policy.calendar == LONDON_OFFICE
    assert policy.deadline(utc(2026, 12, 4, 19, 0), Priority.NORMAL, RequestType.STANDARD) == utc(2026, 12, 9, 16, 0)


@pytest.mark.parametrize(
    ("priority", "request_type", "triaged", "expected"),
    [
        # Untriaged: the request type decides (priority 3 is only a placeholder).
        (Priority.NORMAL, RequestType.STANDARD, False, Target(timedelta(hours=24), "business")),
        (Priority.NORMAL, RequestType.WEB_REFINEMENT, False, Target(timedelta(days=3), "24x7")),
        # Staff set priority 3 explicitly: its own target, whatever the type.
        (Priority.NORMAL, RequestType.STANDARD, True, Target(timedelta(days=3), "24x7")),
        # Only a person gives priority 2 or 4: theirs, triaged or not.
        (Priority.HIGH, RequestType.STANDARD, False, Target(timedelta(hours=1), "24x7")),
        (Priority.LOW, RequestType.STANDARD, True, Target(timedelta(days=7), "24x7")),
        # Priority 1 is always its own 15 minutes.
        (Priority.URGENT, RequestType.STANDARD, True, Target(timedelta(minutes=15), "24x7")),
        (Priority.URGENT, RequestType.URGENT, False, Target(timedelta(minutes=15), "24x7")),
    ],
)
def test_which_target_applies(priority: Priority, request_type: RequestType, triaged: bool, expected: Target) -> None:
    settings = settings_from_dict({"imap": {"host": "h", "username": "u", "password_env": "X"}, "smtp": {"host": "h"}})
    assert policy_from_settings(settings).target_for(priority, request_type, triaged=triaged) == expected
