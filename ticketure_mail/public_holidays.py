"""A country's public holidays, from the holidays package (the only module that imports it)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

import holidays


@dataclass(frozen=True)
class PublicHolidays:
    """The public holidays of one country (and optionally one of its subdivisions), any year.

    A value: equal for the same region, and safe to share between threads, because each
    year's dates are computed once into a read-only mapping rather than into the package's
    own lazily filled dictionary.
    """

    country: str
    subdivision: str = ""

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and day in _dates(self.country, self.subdivision, day.year)

    def name(self, day: date) -> str | None:
        """What the holiday is called, or None on an ordinary day."""
        return _dates(self.country, self.subdivision, day.year).get(day)


def region_problem(country: str, subdivision: str) -> str:
    """Why a country or subdivision code cannot be used, or "" when it can."""
    supported = holidays.list_supported_countries()
    if country not in supported:
        return f"unknown country code {country!r} (ISO 3166-1 alpha-2, e.g. 'GB' or 'US')"
    if subdivision and subdivision not in supported[country]:
        return f"unknown subdivision {subdivision!r} of {country} (one of {', '.join(supported[country])})"
    return ""


@functools.lru_cache(maxsize=512)
def _dates(country: str, subdivision: str, year: int) -> Mapping[date, str]:
    found = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    return MappingProxyType({day: str(label) for day, label in found.items() if day.year == year})
