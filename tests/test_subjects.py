"""Reply prefixes and ticket references in subject lines."""

import pytest

from ticketure_mail.subjects import find_reference, format_reference, strip_reply_prefixes


@pytest.mark.parametrize(
    ("subject", "stripped"),
    [
        ("Re: hello", "hello"),
        ("RE: Re: re: hello", "hello"),
        ("AW: SV: Urgent Priority: VPN", "Urgent Priority: VPN"),
        ("回复：AW: Urgent Priority: VPN", "Urgent Priority: VPN"),
        ("Fwd: FW: TR: WG: VS: Antw: hello", "hello"),
        ("Re[2]: RE(3): hello", "hello"),
        ("Re : spaced", "spaced"),
        ("Regarding: not a prefix", "Regarding: not a prefix"),
        ("Urgent: not a prefix", "Urgent: not a prefix"),
        ("", ""),
    ],
)
def test_strip_reply_prefixes(subject: str, stripped: str) -> None:
    assert strip_reply_prefixes(subject) == stripped


@pytest.mark.parametrize(
    ("subject", "reference"),
    [
        ("Re: [TKT-000042] Printer", "TKT-000042"),
        ("Re: [tkt-42] Printer", "TKT-000042"),
        ("TKT-7 follow-up", "TKT-000007"),
        ("XTKT-7", None),
        ("TKT-7x", None),
        ("TKT-", None),
        ("no reference", None),
    ],
)
def test_find_reference(subject: str, reference: str | None) -> None:
    assert find_reference(subject, "TKT") == reference


def test_format_reference_pads_to_six_digits() -> None:
    assert format_reference("TKT", 42) == "TKT-000042"
    assert format_reference("TKT", 1234567) == "TKT-1234567"
