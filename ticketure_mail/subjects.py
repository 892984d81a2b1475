"""Reads subject lines: reply and forward prefixes, and the ticket reference we put there."""

from __future__ import annotations

import re

# Reply/forward prefixes in the languages our clients' mail programs use. Each may carry a
# counter ("Re[2]:", "RE(3):") and end in an ASCII or a full-width colon ("回复：").
_PREFIX_WORDS = (
    "re", "aw", "wg", "sv", "vs", "antw", "antwort", "fwd", "fw", "tr", "rif", "r", "enc",
    "odp", "vl", "ynt", "res", "rv", "doorst", "ref",
    "回复", "答复", "转发", "回覆", "轉寄",
)
_PREFIX = re.compile(
    r"^\s*(?:" + "|".join(re.escape(w) for w in sorted(_PREFIX_WORDS, key=len, reverse=True)) + r")"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)


def strip_reply_prefixes(subject: str) -> str:
    """The subject without any run of leading reply/forward prefixes, mixed and repeated."""
    previous = None
    while previous != subject:
        previous = subject
        subject = _PREFIX.sub("", subject, count=1)
    return subject.strip()


def reference_pattern(prefix: str) -> re.Pattern[str]:
    """Matches a ticket reference such as ``[TKT-000042]`` (brackets optional) for a prefix."""
    return re.compile(r"(?<![^\W_])" + re.escape(prefix) + r"-(\d{1,12})(?![^\W_])", re.IGNORECASE)


def format_reference(prefix: str, number: int) -> str:
    return f"{prefix}-{number:06d}"


def find_reference(subject: str, prefix: str) -> str | None:
    """The first ticket reference in a subject, in its canonical form, or None."""
    match = reference_pattern(prefix).search(subject)
    if match is None:
        return None
    return format_reference(prefix, int(match.group(1)))
