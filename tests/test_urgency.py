"""Subject -> urgency marker, as a table: every edge case of the rule in urgency.py."""

import pytest

from ticketure_mail.urgency import UrgencyRule

RULE = UrgencyRule(["Urgent", "Urgent-Priority", "Urgent Priority"], ["not", "non"])


@pytest.mark.parametrize(
    ("subject", "marker"),
    [
        ("Urgent: site down", "Urgent"),
        ("urgent – facture manquante", "urgent"),
        ("URGENT!! Payroll file rejected", "URGENT"),
        ("[Urgent-Priority] Cannot log in", "Urgent-Priority"),
        ("Urgent Priority: VPN drops", "Urgent Priority"),
        ("Urgent  Priority (two spaces)", "Urgent  Priority"),
        ("urgent_priority in a tag", "urgent_priority"),
        ("AW: SV: Urgent Priority: VPN drops every hour", "Urgent Priority"),
        ("回复：AW: Urgent Priority: VPN", "Urgent Priority"),
        ("Payments failing - urgent", "urgent"),
        ("(urgent)", "urgent"),
        ("Not urgent? Actually URGENT now", "URGENT"),
        # Not markers:
        ("Insurgent tour tickets - refund question", None),
        ("Need a callback urgently about contract renewal", None),
        ("Not urgent: typo on pricing page", None),
        ("non-urgent request", None),
        ("Non urgent request", None),
        ("nonurgent request", None),
        ("urgent2 is a product code", None),
        ("2urgent", None),
        ("Urgency of the matter", None),
        ("", None),
        ("Printer jam on floor 3", None),
    ],
)
def test_marker_in_subject(subject: str, marker: str | None) -> None:
    assert RULE.find(subject) == marker


def test_configured_markers_are_escaped_not_regular_expressions() -> None:
    rule = UrgencyRule(["P1+", "a.b"], [])
    assert rule.find("ticket P1+ now") == "P1+"
    assert rule.find("ticket P11 now") is None
    assert rule.find("axb") is None


def test_without_negations_every_occurrence_counts() -> None:
    assert UrgencyRule(["urgent"], []).find("not urgent") == "urgent"


def test_an_empty_marker_list_is_refused() -> None:
    with pytest.raises(ValueError):
        UrgencyRule([" "], [])


@pytest.mark.parametrize(
    ("subject", "urgent"),
    [
        # Negations joined by any dash a keyboard or a phone inserts.
        ("non\u2011urgent request", False),  # non-breaking hyphen
        ("non\u2010urgent request", False),  # hyphen
        ("non\u2013urgent request", False),  # en dash
        ("not\u00a0urgent", False),  # no-break space
        # What looks like the marker is the marker: full-width letters, a soft hyphen inside.
        ("\uff35\uff32\uff27\uff25\uff2e\uff34: site down", True),
        ("ur\u00adgent: site down", True),
        ("Urgent\u2010Priority: site down", True),
        ("urg\u200bent: zero-width space inside", True),
    ],
)
def test_unicode_forms_of_markers_and_negations(subject: str, urgent: bool) -> None:
    assert (RULE.find(subject) is not None) == urgent


def test_a_huge_subject_of_negated_markers_is_checked_in_linear_time() -> None:
    # Once quadratic: 1 MB of "not urgent " took about 40 minutes (pytest-timeout ends that).
    assert RULE.find("not urgent " * 100_000) is None
    assert RULE.find("not urgent " * 100_000 + "URGENT") == "URGENT"
