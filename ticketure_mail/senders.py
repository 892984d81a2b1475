"""Who a message is from, where an answer to it goes, and whether that address can be answered; pure."""

from __future__ import annotations

import re

from .model import Address, ParsedMail

# RFC 5321 caps a forward path at 256 octets including the angle brackets.
_MAX_ANSWERABLE = 254
_UNANSWERABLE_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


def requester_of(mail: ParsedMail) -> Address | None:
    """Who asked: the From mailbox, else Sender, else the envelope sender; None if nobody."""
    if mail.from_address and "@" in mail.from_address.address:
        return mail.from_address
    if mail.sender and "@" in mail.sender.address:
        return mail.sender
    if mail.return_path and "@" in mail.return_path:
        return Address("", mail.return_path)
    return None


def answer_address(mail: ParsedMail) -> Address | None:
    """Where an answer goes: the first complete Reply-To mailbox, else the requester."""
    for candidate in mail.reply_to:
        if "@" in candidate.address:
            return candidate
    return requester_of(mail)


def unanswerable_reason(address: str) -> str:
    """Why mail to an address cannot be sent, or "" when it can be tried."""
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        return "no address to answer"
    if len(address) > _MAX_ANSWERABLE:
        return f"address too long to answer ({len(address)} characters)"
    if _UNANSWERABLE_CHARS.search(address):
        return "address with spaces or control characters cannot be answered"
    return ""


def address_key(address: str) -> str:
    """One spelling per mailbox for counting mail to it: case folded in every script."""
    return address.replace("\x00", "").casefold()
