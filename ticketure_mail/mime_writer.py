"""Writes the plain-text messages we send (acknowledgements, alerts) as bytes; pure.

What we send is always one UTF-8 text part under a fixed set of headers, so it is written
directly. The standard library's EmailMessage under a policy gives the same bytes about ten
times slower, as it parses back every header value it is given; after an outage that cost
was a fifth of the time spent on each message. Every value that comes from mail (a name, a
subject, an address) passes through here, so this module is also what keeps a client from
adding a header: no value can carry a line break into the output.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from email.header import Header

# Folding starts past the hard line limit only: the standard library folding a plain subject
# at 78 moved it onto a continuation line, which some clients show raw.
MAX_LINE = 998
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SPACES = re.compile(r"\s+")
# RFC 5322 atext, plus any non-ASCII character (RFC 6532).
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+)*")
_QUOTED_STRING = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"')
_DOMAIN_LITERAL = re.compile(r"\[[!-Z^-~]*\]")
_NAME_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
# A Message-ID written into In-Reply-To or References: printable ASCII without brackets.
_MESSAGE_ID = re.compile(r"[!-;=?-~]{1,900}")


def one_line(text: str) -> str:
    """Control characters (CR and LF among them) become spaces, runs of space one space."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def address(name: str, addr_spec: str, utf8: bool) -> str:
    """A mailbox for From, To or Reply-To: ``Name <local@domain>``.

    The display name is made one line and encoded (RFC 2047) unless the message goes out as
    SMTPUTF8. The address keeps its spelling where it is valid as written, so the header names
    the same mailbox as the envelope; a local part that is not, is quoted. Raises ValueError for
    an address no header can carry.
    """
    spec = _addr_spec(addr_spec, utf8)
    name = one_line(name)
    if not name:
        return spec
    if name.isascii():
        if _NAME_SPECIALS.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{spec}>"
    if utf8:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{spec}>'
    return f"{_encoded(name, 'To')} <{spec}>"


def unstructured(value: str, header_name: str, utf8: bool) -> str:
    """A free-text header value (Subject): one line; encoded words when it is not ASCII."""
    value = one_line(value)
    if value.isascii() or utf8:
        return value
    return _encoded(value, header_name)


def message_id_list(ids: Sequence[str]) -> str:
    """``<a> <b>`` for In-Reply-To and References, folded a line per id when long. An id that
    could break the header (spaces, brackets, non-ASCII, over-long) is left out."""
    usable = [f"<{i}>" for i in ids if _MESSAGE_ID.fullmatch(i)]
    joined = " ".join(usable)
    return joined if len(joined) <= 76 else "\r\n ".join(usable)


def render(headers: Sequence[tuple[str, str]], body: str, utf8: bool = False) -> bytes:
    """The whole message: the headers given (one whose value is empty is left out), then the MIME headers of one UTF-8 text part in
    quoted-printable, then the body with CRLF line ends."""
    lines = [f"{name}: {value}" for name, value in headers if value]
    for line in lines:
        if "\n" in line.replace("\r\n ", "") or "\r" in line.replace("\r\n ", ""):
            raise ValueError(f"header value breaks its line: {line[:40]!r}")
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"',
              "Content-Transfer-Encoding: quoted-printable"]
    head = "\r\n".join(lines).encode("utf-8" if utf8 else "ascii")
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return head + b"\r\n\r\n" + encoded


def _addr_spec(addr_spec: str, utf8: bool) -> str:
    if _CONTROL.search(addr_spec) or (not utf8 and not addr_spec.isascii()):
        raise ValueError("address cannot be written in a header")
    local, at, domain = addr_spec.rpartition("@")
    if not at or not local or not (_DOT_ATOM.fullmatch(domain) or _DOMAIN_LITERAL.fullmatch(domain)):
        raise ValueError("address cannot be written in a header")
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{domain}"


def _encoded(value: str, header_name: str) -> str:
    return Header(value, "utf-8", header_name=header_name).encode(linesep="\r\n", maxlinelen=76)
