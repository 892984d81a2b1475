"""Headers -> automatic or not, acknowledge or not (RFC 3834 and the habits of real robots)."""

import pytest

from ticketure_mail.loops import LOOP_HEADER, judge
from ticketure_mail.model import Address

from mailfactory import parsed

OWN = {"support@ticketure.com"}


@pytest.mark.parametrize(
    ("headers", "fields", "sender", "automatic", "no_ack"),
    [
        ({}, {}, "client@example.com", False, False),
        ({"Auto-Submitted": "no"}, {}, "client@example.com", False, False),
        ({"Auto-Submitted": "auto-replied"}, {}, "client@example.com", True, True),
        ({"Auto-Submitted": "auto-generated; owner-email=x@example.com"}, {}, "client@example.com", True, True),
        ({"X-Autoreply": "yes"}, {}, "client@example.com", True, True),
        ({"Precedence": "auto_reply"}, {}, "client@example.com", True, True),
        ({LOOP_HEADER: "TKT-000001"}, {}, "client@example.com", True, True),
        ({"X-Loop": "support@ticketure.com"}, {}, "client@example.com", True, True),
        ({"X-Loop": "other@example.com"}, {}, "client@example.com", False, False),
        ({}, {}, "support@ticketure.com", True, True),
        ({}, {}, "SUPPORT@ticketure.com", True, True),
        ({}, {}, "MAILER-DAEMON@mx.example.org", True, True),
        ({}, {}, "postmaster@example.org", True, True),
        ({}, {"return_path": ""}, "client@example.com", True, True),
        ({}, {"return_path": "client@example.com"}, "client@example.com", False, False),
        ({}, {"is_delivery_report": True}, "client@example.com", True, True),
        # A person may have written these, but an answer would reach a list, a robot or nobody.
        ({"Precedence": "bulk"}, {}, "client@example.com", False, True),
        ({"Precedence": "list"}, {}, "client@example.com", False, True),
        ({"Precedence": "junk"}, {}, "client@example.com", False, True),
        ({"List-Id": "<team.lists.example.com>"}, {}, "client@example.com", False, True),
        ({"List-Unsubscribe": "<mailto:leave@lists.example.com>"}, {}, "client@example.com", False, True),
        ({"List-Post": "<mailto:team@lists.example.com>"}, {}, "client@example.com", False, True),
        ({"X-Auto-Response-Suppress": "All"}, {}, "client@example.com", False, True),
        ({"X-Auto-Response-Suppress": "DR, AutoReply"}, {}, "client@example.com", False, True),
        ({"X-Auto-Response-Suppress": "OOF"}, {}, "client@example.com", False, False),
        ({}, {}, "no-reply@shop.example.com", False, True),
        ({}, {}, "noreply@shop.example.com", False, True),
        ({}, {}, "do-not-reply@shop.example.com", False, True),
        ({}, {}, "norman@example.com", False, False),
    ],
)
def test_judge(headers: dict[str, str], fields: dict, sender: str, automatic: bool, no_ack: bool) -> None:
    verdict = judge(parsed(from_addr=sender, headers=headers, **fields), OWN)
    assert (verdict.automatic, verdict.no_ack) == (automatic, no_ack)
    assert bool(verdict.reason) == no_ack


def test_a_message_without_sender_is_not_automatic_by_itself() -> None:
    verdict = judge(parsed(from_addr="", from_address=None), OWN)
    assert not verdict.automatic


def test_reply_to_does_not_change_the_verdict() -> None:
    mail = parsed(reply_to=(Address("", "support@ticketure.com"),))
    assert not judge(mail, OWN).automatic


def test_rate_limit_windows() -> None:
    from datetime import UTC, datetime, timedelta

    from ticketure_mail.config import RateLimit
    from ticketure_mail.loops import rate_limit_reason

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    limits = (RateLimit(5, 10), RateLimit(20, 1440))
    minutes_ago = lambda *m: [now - timedelta(minutes=x) for x in m]  # noqa: E731
    assert rate_limit_reason([], now, limits) == ""
    assert rate_limit_reason(minutes_ago(1, 2, 3, 4), now, limits) == ""
    assert "5 acknowledgements" in rate_limit_reason(minutes_ago(1, 2, 3, 4, 5), now, limits)
    assert rate_limit_reason(minutes_ago(1, 2, 3, 4, 11), now, limits) == ""  # one fell out of the window
    assert "1440 minutes" in rate_limit_reason(minutes_ago(*range(20, 420, 20)), now, limits)
    assert rate_limit_reason(minutes_ago(*range(20, 400, 20)), now, limits) == ""


@pytest.mark.parametrize(
    ("fields", "automatic", "no_ack"),
    [
        # No From: the rules look at the address that would be answered.
        ({"from_address": None, "sender": Address("", "MAILER-DAEMON@mx.example.org")}, True, True),
        ({"from_address": None, "return_path": "noreply@robot.example.com"}, False, True),
        ({"from_address": None, "return_path": "client@example.com"}, False, False),
        # Reply-To decides where an answer goes: never to ourselves, never to a robot.
        ({"reply_to": (Address("", "support@ticketure.com"),)}, False, True),
        ({"reply_to": (Address("", "no-reply@shop.example.com"),)}, False, True),
        ({"reply_to": (Address("", "mailer-daemon@example.com"),)}, False, True),
        ({"reply_to": (Address("Desk", "desk@example.com"),)}, False, False),
    ],
)
def test_the_answered_address_is_judged_too(fields: dict, automatic: bool, no_ack: bool) -> None:
    verdict = judge(parsed(**fields), OWN)
    assert (verdict.automatic, verdict.no_ack) == (automatic, no_ack)


@pytest.mark.parametrize(
    ("address", "answerable"),
    [
        ("client@example.com", True),
        ("josé.núñez@example.com", True),
        ('"r\x00t"@example.com', False),
        ("a b@example.com", False),
        ("line\u2028break@example.com", False),
        ("a" * 250 + "@example.com", False),
        ("nodomain@", False),
        ("@nolocal.example.com", False),
    ],
)
def test_unanswerable_addresses(address: str, answerable: bool) -> None:
    from ticketure_mail.senders import unanswerable_reason

    assert (unanswerable_reason(address) == "") == answerable
