"""Classifies a new request by the configured word rules (web refinement, API request ...); pure.

The rule, with every edge case we decided:
- Rules are tried in the order the config lists them; the first rule that finds one of its
  words or phrases wins. A message no rule matches is standard support.
- A word or phrase matches case-insensitively, as a whole word: a letter or digit directly
  before or after it makes it part of another word ("fonts" is not "font", "rapid" holds no
  "API"). Inside a phrase any run of spaces, hyphens or underscores matches the separator,
  so "API key" also finds "api-key" and "API  key".
- Configured words are escaped before they go into a regular expression: "C++" or "(beta)"
  mean those characters, nothing more.
- A rule looks in the subject, the body or both, as its ``look_in`` says. In the body it
  skips quoted lines ("> ...") and stops at a signature ("-- "), an "-----Original Message-----"
  block or an "On ... wrote:" line: words there are someone else's, or a footer's.
- The urgency marker is decided before these rules (decisions.classify): an urgent request
  is priority 1 whatever its words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .config import LookIn, Settings, TypeRule
from .model import RequestType

_WORD_CHAR = r"[^\W_]"  # a letter or a digit, in any script
_SEPARATOR = r"[\s\-_]+"
# Bodies are searched this far: a rule is about what the client wrote first, not an attached log.
_MAX_BODY_CHARS = 20_000
_BODY_END = re.compile(
    r"^(?:--\s*|-{2,}\s*Original Message\s*-{2,}|On\b.{0,200}\bwrote:\s*)$", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class TypeMatch:
    """The type a message gets and why: the rule, the words as written, and where."""

    request_type: RequestType
    rule: str | None = None
    word: str | None = None
    where: LookIn | None = None


STANDARD = TypeMatch(RequestType.STANDARD)


class TypeRules:
    """The ordered rules of the config, compiled once."""

    def __init__(self, rules: Iterable[TypeRule]) -> None:
        self._rules = [(rule, _pattern(rule.words)) for rule in rules]

    @classmethod
    def from_settings(cls, settings: Settings) -> TypeRules:
        return cls(settings.request_types.rules)

    def classify(self, subject: str, body: str) -> TypeMatch:
        """The first rule that matches, or standard support."""
        texts: dict[LookIn, str] = {"subject": subject, "body": own_words(body)}
        for rule, pattern in self._rules:
            for where in rule.look_in:
                found = pattern.search(texts[where])
                if found is not None:
                    return TypeMatch(RequestType(rule.type), rule.name, found.group(0), where)
        return STANDARD


def own_words(body: str) -> str:
    """The part of a body the sender wrote: no quoted lines, nothing after a signature or a quote header."""
    body = body[:_MAX_BODY_CHARS]
    end = _BODY_END.search(body)
    if end is not None:
        body = body[: end.start()]
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith(">"))


def _pattern(words: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)
    alternatives = "|".join(_phrase(w) for w in ordered)
    return re.compile(rf"(?<!{_WORD_CHAR})(?:{alternatives})(?!{_WORD_CHAR})", re.IGNORECASE)


def _phrase(words: str) -> str:
    parts = [re.escape(part) for part in re.split(_SEPARATOR, words) if part]
    # A "word" made only of separators ("-") is taken literally rather than matching everywhere.
    return _SEPARATOR.join(parts) if parts else re.escape(words)
