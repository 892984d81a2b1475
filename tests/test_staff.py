"""Who counts as staff, as a table."""

import pytest

from ticketure_mail.staff import NO_STAFF, StaffDirectory

STAFF = StaffDirectory(addresses=("Lead@Partner.example",), domains=("ticketure.com", ".support.example."))


@pytest.mark.parametrize(
    ("address", "staff"),
    [
        ("agent@ticketure.com", True),
        ("AGENT@TICKETURE.COM", True),
        ("agent@eu.ticketure.com", True),  # subdomains belong to the domain
        ("agent@notticketure.com", False),  # a look-alike does not
        ("agent@ticketure.com.evil.example", False),
        ("lead@partner.example", True),
        ("other@partner.example", False),
        ("x@support.example", True),
        ("", False),
        ("no-at-sign", False),
    ],
)
def test_is_staff(address: str, staff: bool) -> None:
    assert STAFF.is_staff(address) == staff


def test_nobody_is_staff_by_default() -> None:
    assert not NO_STAFF and not NO_STAFF.is_staff("agent@ticketure.com")
