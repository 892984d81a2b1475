"""Decides whether a subject line carries an urgency marker.

The rule, with every edge case we decided:
- A marker (by default ``Urgent``, ``Urgent-Priority``, ``Urgent Priority``) is matched
  case-insensitively anywhere in the decoded subject, also behind reply prefixes and inside
  tags such as ``[Urgent-Priority]``.
- It must stand as a word: a letter or digit directly before or after it makes it part of
  another word (``Insurgent``, ``urgently``, ``urgent2``). Punctuation does not (``URGENT!!``,
  ``urgent –``, ``urgent:``).
- Inside a phrase marker, any run of spaces, hyphens or underscores matches the separator, so
  ``Urgent  Priority`` and ``urgent_priority`` count.
- Directly preceded by a negation word (``not``, ``non``; followed by spaces or a hyphen) the
  occurrence is negated: ``Not urgent``, ``non-urgent``. Any other occurrence in the same
  subject still counts: ``Not urgent? Actually URGENT`` is urgent.
- Text is compared as a reader sees it: compatibility forms are folded (full-width
  ``ＵＲＧＥＮＴ`` is ``URGENT``), invisible characters inside a word (soft hyphen, zero-width
  space) are ignored, and every Unicode dash or space counts as a hyphen or a space, in
  phrases (``Urgent‐Priority``) and after negations (``non‑urgent``).
- Only the subject counts: ``X-Priority`` or ``Importance`` headers do not make mail urgent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_WORD_CHAR = r"[^\W_]"  # a letter or a digit, in any script
# Spaces and every dash a keyboard, a phone or a word processor may put between two words.
_SEPARATOR = r"[\s\-_\u2010-\u2015\u2212\ufe58\ufe63\uff0d]+"
# Characters that render as nothing: a word containing them reads as the word without them.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))
# Look back only over the longest negation and a run of separators, so the check stays linear.
_SEPARATOR_REACH = 32


class UrgencyRule:
    """Finds the configured markers in a subject, honouring word boundaries and negations."""

    def __init__(self, markers: Iterable[str], negations: Iterable[str] = ("not", "non")) -> None:
        ordered = sorted({m.strip() for m in markers if m.strip()}, key=len, reverse=True)
        if not ordered:
            raise ValueError("at least one urgency marker is needed")
        alternatives = "|".join(_phrase(m) for m in ordered)
        self._marker = re.compile(rf"(?<!{_WORD_CHAR})(?:{alternatives})(?!{_WORD_CHAR})", re.IGNORECASE)
        words = [re.escape(n.strip()) for n in negations if n.strip()]
        self._reach = max((len(n.strip()) for n in negations), default=0) + _SEPARATOR_REACH
        self._negated_tail = (
            re.compile(rf"(?<!{_WORD_CHAR})(?:{'|'.join(words)}){_SEPARATOR}$", re.IGNORECASE) if words else None
        )

    def find(self, subject: str) -> str | None:
        """The first marker that counts, as it reads in the subject, or None."""
        text = unicodedata.normalize("NFKC", subject).translate(_INVISIBLE)
        for match in self._marker.finditer(text):
            before = text[max(0, match.start() - self._reach) : match.start()]
            if self._negated_tail is not None and self._negated_tail.search(before):
                continue
            return match.group(0)
        return None


def _phrase(marker: str) -> str:
    parts = [re.escape(p) for p in re.split(_SEPARATOR, unicodedata.normalize("NFKC", marker)) if p]
    return _SEPARATOR.join(parts)
