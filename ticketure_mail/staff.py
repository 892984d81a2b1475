"""Recognises mail from support staff, by address or by domain; pure."""

from __future__ import annotations

from collections.abc import Iterable

from .config import Settings


class StaffDirectory:
    """Who counts as staff. Addresses compare without case; a domain covers its subdomains
    too ("ticketure.com" takes "eu.ticketure.com"), never a look-alike ("notticketure.com").

    The From address is all it looks at. Mail that forges a staff address can therefore
    record a first response: the mail server's SPF/DKIM/DMARC checks are what stop forgery.
    """

    def __init__(self, addresses: Iterable[str] = (), domains: Iterable[str] = ()) -> None:
        self._addresses = frozenset(a.strip().lower() for a in addresses if a.strip())
        self._domains = tuple(sorted({d.strip(". ").lower() for d in domains if d.strip(". ")}))

    @classmethod
    def from_settings(cls, settings: Settings) -> StaffDirectory:
        return cls(settings.staff.addresses, settings.staff.domains)

    def __bool__(self) -> bool:
        return bool(self._addresses or self._domains)

    def is_staff(self, address: str) -> bool:
        address = address.strip().lower()
        if not address or "@" not in address:
            return False
        if address in self._addresses:
            return True
        domain = address.rpartition("@")[2]
        return any(domain == d or domain.endswith("." + d) for d in self._domains)


NO_STAFF = StaffDirectory()
