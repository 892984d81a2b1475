"""Turn the raw bytes of one message into a ParsedMail, repairing what senders get wrong."""

from __future__ import annotations

import binascii
import codecs
import functools
import hashlib
import io
import json
import logging
import mimetypes
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value, parsedate_to_datetime
from typing import NamedTuple

import mailparser

from ticketure_mail.errors import ParseError
from ticketure_mail.htmltext import html_to_text
from ticketure_mail.model import Address, Attachment, ParsedMail

try:
    import tnefparse
except ImportError:  # pragma: no cover - without it winmail.dat is kept whole, as promised
    tnefparse = None

# mail-parser logs every unhandled part at WARNING and, at ERROR, each raw header it cannot
# decode: personal data in the log for a repair this module makes and reports itself. tnefparse
# warns about checksums of files we only read. Neither helps an admin.
logging.getLogger("mailparser").setLevel(logging.CRITICAL)
logging.getLogger("tnefparse").setLevel(logging.ERROR)

# Deeper nesting than this is an attack or a loop, not a message a person wrote.
_MAX_DEPTH = 50
_MAX_FILENAME = 200
_MAX_MESSAGE_ID = 998
# Real header blocks stay far below this; beyond it mail-parser's cost grows quadratically.
_MAX_LIBRARY_HEADER_BYTES = 64 * 1024

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BAD_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_B64_NOISE = re.compile(rb"[^A-Za-z0-9+/=]")
_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)
_ISO2022JP_ESCAPES = (b"\x1b$B", b"\x1b(B", b"\x1b$@", b"\x1b(J")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Control characters, and the bidi overrides that make "evil\u202etxt.exe" read as a .txt file.
_FILENAME_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ATOM_CHARS = r"[^\s\x00-\x1f\x7f@<>()\[\],;:\"\\.]"
_DOMAIN = re.compile(rf"{_ATOM_CHARS}+(?:\.{_ATOM_CHARS}+)*|\[[^\[\]\\\s]*\]")
_LOCAL = re.compile(r"\"(?:[^\"\\]|\\.)*\"|[^\s\x00-\x1f\x7f@<>()\[\],;:\"\\]+")
_CFWS_AROUND_DELIMITER = re.compile(r"\s*([@.])\s*")
# A run of ordinary characters in an address list. An encoded-word is taken whole, so the ","
# or ":" a sender put inside one cannot split the list; a domain literal may hold ":".
_ADDRESS_WORD = re.compile(r"(?:=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=|[^,;:\"(<\[]|\[[^\]]*\]?)+")
_NULL_PATH = re.compile(r"\s*<\s*>\s*")

# Labels Python does not know, or knows as a narrower charset than the one mailers mean.
_CHARSET_ALIASES = {
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874",
    "x-sjis": "shift_jis",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-mac-roman": "mac_roman",
    # Browsers read latin-1 labels as windows-1252: mailers write its quotes under that label.
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
}
# Labels that say nothing about 8-bit bytes: such text is read as if it had no label.
_ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "x-unknown", "unknown-8bit"})
# Python codecs a label can name that are no charset, and fail or mislead on mail text.
_PYTHON_ONLY_CODECS = frozenset({"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape"})
# Signatures and the PGP/MIME control part are machinery, not files a person attached.
_NOT_FILES = frozenset(
    {
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
        "application/pgp-encrypted",
    }
)
_FORWARDED_TYPES = frozenset({"message/rfc822", "message/global"})
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_HEADER_BLOCK_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
_EXTENSIONS = {"application/ms-tnef": ".dat", "application/vnd.ms-tnef": ".dat"}
# Built-in tables only: the host's mime.types must not change what a file is called.
_MIME_TABLE = mimetypes.MimeTypes()
# Forwarded messages are written back out as they came: CRLF, no re-folding, no ">From".
_EML_POLICY = policy.compat32.clone(linesep="\r\n", max_line_length=None)


def parse_mail(raw: bytes) -> ParsedMail:
    """Decode one RFC 5322 message; raises ParseError only when ``raw`` is not a mail at all."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ParseError(f"expected bytes, got {type(raw).__name__}")
    data = bytes(raw)
    if not data or data.isspace():
        raise ParseError("empty message")
    repairs: list[str] = []
    message, date = _parse_tree(data, repairs)
    if not message.keys() and not _has_body(message):
        raise ParseError("no headers and no body")
    try:
        return _build(message, date, repairs)
    except Exception as exc:  # a decoding bug must park this one message, not stop the mailbox
        raise ParseError(f"could not decode message: {type(exc).__name__}") from exc


def normalize_message_id(value: str) -> str | None:
    """The bare id in a Message-ID value (no brackets, no whitespace), or None for junk."""
    if not isinstance(value, str):
        return None
    found = _BRACKETED_ID.search(value)
    if found:
        return _bare_id(found.group(1))
    if "<" in value or ">" in value:
        return None
    candidate = value.strip()
    # Without brackets only a single word can be an id; a phrase is junk.
    return None if _WHITESPACE.search(candidate) else _bare_id(candidate)


def message_ids(value: str) -> tuple[str, ...]:
    """Every bracketed id in an In-Reply-To or References value, in order, junk skipped."""
    if not isinstance(value, str):
        return ()
    found = [bare for m in _BRACKETED_ID.finditer(value) if (bare := _bare_id(m.group(1)))]
    if not found and "<" not in value and ">" not in value:
        # Some gateways drop the brackets; an id is still recognisable by its "@".
        found = [bare for word in value.split() if "@" in word and (bare := _bare_id(word))]
    return tuple(found)


def _bare_id(text: str) -> str | None:
    # Folding can split an id over lines, and whitespace is never part of one.
    bare = _WHITESPACE.sub("", _CONTROLS.sub("", text))
    if not bare or len(bare) > _MAX_MESSAGE_ID or _SURROGATES.search(bare):
        return None
    return bare


# --- the library call -----------------------------------------------------------------------


def _parse_tree(data: bytes, repairs: list[str]) -> tuple[Message, datetime | None]:
    """The stdlib message tree mail-parser builds, and the Date it validated."""
    if _header_block_size(data) > _MAX_LIBRARY_HEADER_BYTES:
        # mail-parser decodes headers through email.header.decode_header, which is quadratic in
        # the number of encoded-words: a 3 MB header block held it for half a minute.
        repairs.append("header block too large for mail-parser, read by the stdlib alone")
        message = _stdlib_tree(data)
        return message, _stdlib_date(message)
    try:
        parsed = mailparser.parse_from_bytes(data)
    except Exception as exc:  # mail-parser raises far more than its own error classes
        if isinstance(exc.__cause__, RecursionError):
            raise ParseError("multipart nesting too deep") from exc
        # It fails in its own post-processing (a NUL in a charset label is enough), on mail the
        # stdlib reads fine; losing the ticket over that would be worse than a second parse.
        repairs.append(f"mail-parser failed ({type(exc).__name__}), read by the stdlib alone")
        message = _stdlib_tree(data)
        return message, _stdlib_date(message)
    if not isinstance(parsed.message, Message):
        raise ParseError("mail-parser returned no message")
    # mail-parser checks every component of the Date (31 June, 25:61) and answers None rather
    # than guessing, which is what a deadline computed from it needs.
    return parsed.message, _utc(parsed.date)


def _header_block_size(data: bytes) -> int:
    ends = [found for found in (data.find(b"\n\n"), data.find(b"\n\r\n")) if found >= 0]
    return min(ends) if ends else len(data)


def _stdlib_tree(data: bytes) -> Message:
    try:
        return message_from_bytes(data, policy=policy.compat32)
    except Exception as exc:  # a nesting bomb ends in RecursionError here too
        raise ParseError(f"not a readable mail: {type(exc).__name__}") from exc


def _stdlib_date(message: Message) -> datetime | None:
    raw = next((str(v) for n, v in message.raw_items() if str(n).strip().lower() == "date"), None)
    try:
        return _utc(parsedate_to_datetime(_text_from_8bit(raw))) if raw else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _utc(value: object) -> datetime | None:
    # A date without a zone ("-0000") says the zone is unknown; UTC is the neutral reading.
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _has_body(message: Message) -> bool:
    if message.is_multipart():
        return bool(_children(message))
    payload = message.get_payload(decode=True)
    return isinstance(payload, bytes) and bool(payload.strip())


def _children(part: Message) -> list[Message] | None:
    """The subparts of a container, None for a leaf."""
    # Asking a leaf for its payload text runs its charset codec, which may raise; containers
    # hand back their list untouched.
    if not part.is_multipart():
        return None
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


def _build(message: Message, date: datetime | None, repairs: list[str]) -> ParsedMail:
    raw = _raw_header_index(message)
    headers = {name: tuple(_header_text(v, name, repairs) for v in values) for name, values in raw.items()}
    subject = _first(headers, "subject")
    parties = _parties(raw, repairs)
    body_text, body_html, body_parts = _body(message, repairs)
    attachments = _attachments(message, body_parts, repairs)
    is_delivery_report, reported = _report(message)
    message_id = _message_id(raw.get("message-id", []), repairs)
    _date_repairs(raw, date, repairs)
    return ParsedMail(
        message_id=message_id,
        subject=subject,
        from_address=parties.from_address,
        reply_to=parties.reply_to,
        to=parties.to,
        cc=parties.cc,
        sender=parties.sender,
        return_path=parties.return_path,
        in_reply_to=message_ids(" ".join(raw.get("in-reply-to", []))),
        references=message_ids(" ".join(raw.get("references", []))),
        date=date,
        body_text=body_text,
        body_html=body_html,
        attachments=attachments,
        headers=headers,
        is_delivery_report=is_delivery_report,
        reported_message_ids=reported,
        content_digest=_content_digest(headers, subject, body_text),
        defects=_defects(message, repairs),
    )


def _first(headers: dict[str, tuple[str, ...]], name: str) -> str:
    values = headers.get(name, ())
    return values[0] if values else ""


def _defects(message: Message, repairs: list[str]) -> tuple[str, ...]:
    found = [type(defect).__name__ for part in message.walk() for defect in part.defects]
    if not message.keys():
        repairs.append("no header block")
    # Labels and names quoted in a repair come from the sender: keep them one clean line.
    return tuple(dict.fromkeys(_one_line(text) for text in [*repairs, *found]))


# --- header text ----------------------------------------------------------------------------


def _raw_header_index(message: Message) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        index.setdefault(str(name).strip().lower(), []).append(_text_from_8bit(str(value)))
    return index


def _text_from_8bit(value: str) -> str:
    """Undo the parser's surrogate escapes: raw header bytes are UTF-8 (RFC 6532), else latin-1."""
    if value.isascii():
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _unfold(value: str) -> str:
    # Folding is a line break before whitespace; removing the break keeps the whitespace.
    return value.replace("\r", "").replace("\n", "")


def _header_text(value: str, where: str, repairs: list[str]) -> str:
    decoded = _decode_words(_unfold(value), where, repairs)
    if _BAD_CONTROLS.search(decoded):
        repairs.append(f"{where}: control characters replaced")
    return _one_line(decoded)


def _one_line(text: str) -> str:
    text = _SURROGATES.sub("\ufffd", text.replace("\x00", ""))
    return _WHITESPACE.sub(" ", _CONTROLS.sub(" ", text)).strip()


def _decode_words(text: str, where: str, repairs: list[str]) -> str:
    """Decode RFC 2047 encoded-words, dropping the whitespace between adjacent ones (6.2)."""
    if "=?" not in text:
        return text
    segments: list[str | tuple[str, bytes]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        after_word = bool(segments) and isinstance(segments[-1], tuple)
        if gap and not (after_word and not gap.strip(" \t")):
            segments.append(gap)
        segments.append(_word_bytes(match))
        pos = match.end()
    segments.append(text[pos:])
    return "".join(_render_segments(segments, where, repairs))


def _word_bytes(match: re.Match[str]) -> tuple[str, bytes]:
    label, encoding, payload = match.groups()
    # RFC 2231 lets an encoded-word carry a language: "utf-8*de".
    label = label.split("*", 1)[0].lower()
    data = payload.encode("utf-8", "replace")
    if encoding in "qQ":
        return label, binascii.a2b_qp(data, header=True)
    return label, _lenient_base64(data)


def _render_segments(
    segments: list[str | tuple[str, bytes]], where: str, repairs: list[str]
) -> Iterator[str]:
    # Adjacent words in one charset are decoded together: senders split multi-byte characters
    # across words although RFC 2047 forbids it.
    label, chunks = "", list[bytes]()
    for segment in segments:
        if isinstance(segment, tuple) and segment[0] == label:
            chunks.append(segment[1])
            continue
        if label:
            yield _decode(b"".join(chunks), label, where, repairs)
        if isinstance(segment, tuple):
            label, chunks = segment[0], [segment[1]]
        else:
            label, chunks = "", []
            yield segment
    if label:
        yield _decode(b"".join(chunks), label, where, repairs)


# --- charsets and transfer encodings --------------------------------------------------------


def _decode(data: bytes, label: str | None, where: str, repairs: list[str]) -> str:
    """Decode ``data`` by its declared charset; never raises, marks what it had to guess."""
    name = (label or "").strip().strip("\"'").lower()
    if not name or name in _ASCII_LABELS:
        return _decode_unlabelled(data)
    codec = _codec(name)
    if codec is None:
        repairs.append(f"{where}: unknown charset {name[:40]}")
        return data.decode("utf-8", "replace")
    try:
        return data.decode(codec)
    except UnicodeError:
        pass
    # A wrong label hides UTF-8 more often than anything else.
    try:
        text = data.decode("utf-8")
    except UnicodeError:
        repairs.append(f"{where}: bytes invalid in {name[:40]} replaced")
        return data.decode(codec, "replace")
    repairs.append(f"{where}: labelled {name[:40]} but was utf-8")
    return text


def _decode_unlabelled(data: bytes) -> str:
    # ISO-2022-JP is pure 7-bit, so it passes as ASCII and UTF-8: only its escapes tell.
    if b"\x1b" in data and any(escape in data for escape in _ISO2022JP_ESCAPES):
        try:
            return data.decode("iso-2022-jp")
        except UnicodeError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeError:
        return data.decode("latin-1")


@functools.lru_cache(maxsize=256)
def _codec(label: str) -> str | None:
    """The Python codec for a charset label, or None for names that are no mail charset."""
    name = _CHARSET_ALIASES.get(label, label)
    try:
        if codecs.lookup(name).name in _PYTHON_ONLY_CODECS:
            return None
        # Decoding rejects the bytes-to-bytes codecs (base64, zlib) a label may also name.
        b"x".decode(name)
    except UnicodeError:
        pass  # a text codec that only dislikes this one byte (utf-16 wants two)
    except (LookupError, ValueError, TypeError):
        return None
    return name


def _payload_bytes(part: Message, where: str, repairs: list[str]) -> bytes:
    """The decoded bytes of a leaf part; broken base64 or quoted-printable is decoded in part."""
    if part.is_multipart():
        return b""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    encoded = _encoded_payload(part) if encoding == "base64" else None
    if encoded is not None:
        return _base64_payload(encoded.encode("ascii", "ignore"), where, repairs)
    # The stdlib hands back the original 8-bit bytes and decodes quoted-printable leniently
    # (a bad "=XY" stays as it is); only its base64 decoder stops at the first damage.
    decoded = part.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else b""


def _encoded_payload(part: Message) -> str | None:
    try:
        payload = part.get_payload()
    except (LookupError, UnicodeError):  # 8-bit bytes in a base64 body meet a broken charset
        return None
    return payload if isinstance(payload, str) else None


def _base64_payload(data: bytes, where: str, repairs: list[str]) -> bytes:
    compact = b"".join(data.split())
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        repairs.append(f"{where}: invalid base64 repaired")
        return _lenient_base64(compact)


def _lenient_base64(data: bytes) -> bytes:
    # Stray characters are dropped; padding in the middle (two encodings glued together)
    # starts a new run instead of ending the decode there.
    decoded = bytearray()
    for run in _B64_NOISE.sub(b"", data).split(b"="):
        run = run[: len(run) - (len(run) % 4 == 1)]
        if run:
            decoded += binascii.a2b_base64(run + b"=" * (-len(run) % 4))
    return bytes(decoded)


def _clean_text(text: str, where: str, repairs: list[str]) -> str:
    if "\x00" in text:
        repairs.append(f"{where}: NUL bytes removed")
        text = text.replace("\x00", "")
    return _SURROGATES.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


# --- addresses ------------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "word", "quoted", "comment" or "angle"
    text: str


class _Parties(NamedTuple):
    from_address: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    sender: Address | None
    return_path: str | None


def _parties(raw: dict[str, list[str]], repairs: list[str]) -> _Parties:
    senders = _address_list(raw.get("from", []), "from", repairs)
    if len(senders) > 1:
        repairs.append(f"from: {len(senders)} mailboxes, the first is the requester")
    return _Parties(
        from_address=senders[0] if senders else None,
        reply_to=tuple(_address_list(raw.get("reply-to", []), "reply-to", repairs)),
        to=tuple(_address_list(raw.get("to", []), "to", repairs)),
        cc=tuple(_address_list(raw.get("cc", []), "cc", repairs)),
        sender=next(iter(_address_list(raw.get("sender", [])[:1], "sender", repairs)), None),
        return_path=_return_path(raw.get("return-path", []), repairs),
    )


def _address_list(values: list[str], where: str, repairs: list[str]) -> list[Address]:
    """Every complete mailbox in the raw values of one address header, in order."""
    found: list[Address] = []
    for value in values:
        text = _unfold(value)
        # Split before decoding, so an encoded "=2C" in a display name stays inside its name.
        mailboxes = list(_mailboxes(_address_items(text), where, repairs))
        if not mailboxes and text.count('"') % 2:
            # An unclosed quote swallows the rest of the header; read it as if unquoted.
            repairs.append(f"{where}: unbalanced quote ignored")
            mailboxes = list(_mailboxes(_address_items(text.replace('"', "")), where, repairs))
        found.extend(mailboxes)
    return found


def _mailboxes(items: list[list[_Token]], where: str, repairs: list[str]) -> Iterator[Address]:
    phrase = ""
    for tokens in items:
        name, address, is_phrase = _mailbox(tokens, where, repairs)
        if is_phrase:
            # "Sam Lee, Jr. <sam@example.com>": the unquoted comma cut the name in two.
            phrase = f"{phrase}, {name}" if phrase else name
            continue
        has_angle = any(token.kind == "angle" for token in tokens)
        if phrase and has_angle and address:
            repairs.append(f"{where}: unquoted comma in display name")
            name = f"{phrase}, {name}" if name else phrase
        elif phrase:
            repairs.append(f"{where}: address without domain dropped")
        phrase = ""
        if address:
            yield Address(name, address)
        elif any(token.kind != "comment" for token in tokens):
            repairs.append(f"{where}: incomplete address dropped")
    if phrase:
        repairs.append(f"{where}: address without domain dropped")


def _mailbox(tokens: list[_Token], where: str, repairs: list[str]) -> tuple[str, str | None, bool]:
    """(display name, bare address or None, whether the item is only a phrase)."""
    angle = next((i for i, token in enumerate(tokens) if token.kind == "angle"), None)
    if angle is not None:
        name = _phrase(tokens[:angle], where, repairs) or _comment_name(tokens, where, repairs)
        return name, _addr_spec(tokens[angle].text), False
    spec = "".join(_spec_text(token) for token in tokens if token.kind != "comment")
    if spec.strip() and "@" not in spec:
        return _phrase(tokens, where, repairs), None, True
    return _comment_name(tokens, where, repairs), _addr_spec(spec), False


def _spec_text(token: _Token) -> str:
    if token.kind == "quoted":
        return '"' + token.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return token.text


def _phrase(tokens: list[_Token], where: str, repairs: list[str]) -> str:
    raw = "".join(token.text for token in tokens if token.kind in ("word", "quoted"))
    # Encoded-words inside quotes break RFC 2047, but mailers write them and readers decode them.
    return _one_line(_decode_words(raw, where, repairs))


def _comment_name(tokens: list[_Token], where: str, repairs: list[str]) -> str:
    comments = [token.text for token in tokens if token.kind == "comment"]
    return _one_line(_decode_words(comments[0], where, repairs)) if comments else ""


def _addr_spec(spec: str) -> str | None:
    """``local@domain`` with the domain lower-cased, or None when it is not a complete address."""
    spec = _CFWS_AROUND_DELIMITER.sub(r"\1", spec.strip())
    if spec.startswith("@"):
        # Obsolete source route: "@relay1,@relay2:user@example.com".
        spec = spec.partition(":")[2]
    local, at, domain = spec.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    return f"{local}@{domain.lower()}"


def _address_items(text: str) -> list[list[_Token]]:
    """Tokens of each list member, split at commas and group delimiters outside any quoting."""
    items: list[list[_Token]] = [[]]
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in ",;":
            items.append([])
            pos += 1
        elif char == ":":
            # The words so far named a group ("undisclosed-recipients:;"); members follow.
            items[-1] = []
            pos += 1
        elif char == '"':
            body, pos = _quoted(text, pos + 1)
            items[-1].append(_Token("quoted", body))
        elif char == "(":
            body, pos = _comment(text, pos + 1)
            items[-1].append(_Token("comment", body))
        elif char == "<":
            body, pos = _angle(text, pos + 1)
            items[-1].append(_Token("angle", body))
        else:
            match = _ADDRESS_WORD.match(text, pos)
            end = match.end() if match and match.end() > pos else pos + 1
            items[-1].append(_Token("word", text[pos:end]))
            pos = end
    return [item for item in items if item]


def _quoted(text: str, pos: int) -> tuple[str, int]:
    chars: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
            continue
        pos += 1
        if char == '"':
            break
        chars.append(char)
    return "".join(chars), pos


def _comment(text: str, pos: int) -> tuple[str, int]:
    chars: list[str] = []
    depth = 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            chars.append(text[pos + 1])
            pos += 2
            continue
        pos += 1
        depth += (char == "(") - (char == ")")
        if depth == 0:
            break
        chars.append(char)
    return "".join(chars), pos


def _angle(text: str, pos: int) -> tuple[str, int]:
    start, quoted = pos, False
    while pos < len(text):
        char = text[pos]
        if char == "\\" and quoted:
            pos += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[start:pos], pos + 1
        pos += 1
    return text[start:], pos


def _return_path(values: list[str], repairs: list[str]) -> str | None:
    if not values:
        return None
    text = _unfold(values[0])
    if _NULL_PATH.fullmatch(text):
        return ""
    for address in _mailboxes(_address_items(text), "return-path", repairs):
        return address.address
    return None


# --- identifiers and dates ------------------------------------------------------------------


def _message_id(values: list[str], repairs: list[str]) -> str | None:
    if not values:
        repairs.append("message-id: missing")
        return None
    if len(values) > 1:
        repairs.append("message-id: header repeated, the first is used")
    bare = normalize_message_id(_unfold(values[0]))
    if bare is None:
        repairs.append("message-id: unusable value")
    return bare


def _date_repairs(raw: dict[str, list[str]], date: datetime | None, repairs: list[str]) -> None:
    if "date" not in raw:
        repairs.append("date: missing")
    elif date is None:
        repairs.append("date: unparseable")


# --- body -----------------------------------------------------------------------------------


def _body(message: Message, repairs: list[str]) -> tuple[str, str | None, set[int]]:
    """(plain text, original HTML, ids of the parts used), plain text derived from HTML if need be."""
    plain, html = _find_body(message, 0)
    html_source = (
        None if html is None else _clean_text(_part_text(html, "html body", repairs), "html body", repairs)
    )
    text = "" if plain is None else _clean_text(_part_text(plain, "body", repairs), "body", repairs)
    if not text.strip() and html_source:
        text = html_to_text(html_source)
    return text, html_source, {id(part) for part in (plain, html) if part is not None}


def _find_body(part: Message, depth: int) -> tuple[Message | None, Message | None]:
    """The text/plain and text/html parts a reader sees as the message itself."""
    if depth > _MAX_DEPTH or part.get_content_disposition() == "attachment":
        return None, None
    maintype, content_type = part.get_content_maintype(), part.get_content_type()
    children = _children(part)
    if maintype == "multipart" and children is not None:
        return _find_body_among(content_type, children, depth)
    if content_type == "text/html":
        return None, part
    # A multipart whose boundary never appears reaches us as one text blob; it is still the text.
    if content_type == "text/plain" or maintype == "multipart":
        return part, None
    return None, None


def _find_body_among(
    content_type: str, children: list[Message], depth: int
) -> tuple[Message | None, Message | None]:
    if content_type == "multipart/encrypted":
        return None, None
    if content_type == "multipart/signed":
        # RFC 1847: the first part is the content, the second the signature.
        children = children[:1]
    if content_type == "multipart/alternative":
        plain = html = None
        for child in children:
            found_plain, found_html = _find_body(child, depth + 1)
            plain = found_plain if plain is None else plain
            html = found_html if html is None else html
        return plain, html
    for child in children:
        found = _find_body(child, depth + 1)
        if found[0] is not None or found[1] is not None:
            return found
    return None, None


def _part_text(part: Message, where: str, repairs: list[str]) -> str:
    data = _payload_bytes(part, where, repairs)
    label = part.get_content_charset()
    if label is None and part.get_content_subtype() == "html":
        declared = _META_CHARSET.search(data[:4096])
        label = declared.group(1).decode("ascii") if declared else None
    return _decode(data, label, where, repairs)


# --- attachments ----------------------------------------------------------------------------


def _attachments(message: Message, body_parts: set[int], repairs: list[str]) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    for part, parent_type, in_related in _leaf_parts(message, "", False, 0):
        if id(part) in body_parts:
            continue
        number = len(found) + 1
        try:
            name = _declared_filename(part, repairs)
            if _is_user_attachment(part, name, parent_type, in_related):
                found.extend(_attachments_of(part, name, number, repairs))
        except Exception:  # one broken attachment must not cost the requester the whole ticket
            repairs.append(f"attachment {number}: could not be decoded, left out")
    return tuple(found)


def _leaf_parts(
    part: Message, parent_type: str, in_related: bool, depth: int
) -> Iterator[tuple[Message, str, bool]]:
    """Every leaf part and every enclosed message (not entered), with its parent's type."""
    if depth > _MAX_DEPTH:
        return
    children = _children(part)
    if part.get_content_maintype() != "multipart" or children is None:
        yield part, parent_type, in_related
        return
    content_type = part.get_content_type()
    related = in_related or content_type == "multipart/related"
    if content_type == "multipart/signed":
        children = children[:1]  # RFC 1847: after the signed content comes only the signature
    for child in children:
        yield from _leaf_parts(child, content_type, related, depth + 1)


def _is_user_attachment(part: Message, name: str, parent_type: str, in_related: bool) -> bool:
    """Whether a person would call this part an attachment."""
    content_type = part.get_content_type()
    maintype = part.get_content_maintype()
    if content_type in _NOT_FILES or name.lower() == "smime.p7s":
        return False
    if content_type in _FORWARDED_TYPES:
        return True
    if maintype in ("message", "multipart"):
        return False  # delivery-status blocks and the like are data about the mail, not files
    if part.get_content_disposition() == "attachment":
        return True
    if parent_type == "multipart/alternative":
        return False  # another rendering of the body: HTML, or a calendar invitation
    if maintype == "text":
        return bool(name)
    # Unnamed images inside an HTML body's related set are decoration; other files are not.
    return bool(name) or not in_related


def _attachments_of(part: Message, name: str, number: int, repairs: list[str]) -> list[Attachment]:
    content_type = part.get_content_type()
    where = f"attachment {number}"
    if content_type in _FORWARDED_TYPES:
        inner = _inner_message(part)
        if not name and inner is not None:
            name = _subject_filename(inner, repairs)
        data = _message_bytes(inner) if inner is not None else _payload_bytes(part, where, repairs)
        return [Attachment(_safe_filename(name, content_type, number, repairs), content_type, data)]
    data = _payload_bytes(part, where, repairs)
    if content_type in _TNEF_TYPES or name.lower() == "winmail.dat":
        unpacked = _unpack_tnef(data, number, repairs)
        if unpacked:
            return unpacked
        repairs.append(f"{where}: winmail.dat could not be unpacked, kept whole")
    return [Attachment(_safe_filename(name, content_type, number, repairs), content_type, data)]


def _declared_filename(part: Message, repairs: list[str]) -> str:
    """The file name from Content-Disposition or Content-Type, RFC 2231 and RFC 2047 decoded."""
    # The stdlib turns raw 8-bit parameter bytes into U+FFFD, so it reads a repaired copy.
    view = Message()
    for name, value in part.raw_items():
        if str(name).strip().lower() in ("content-disposition", "content-type"):
            view[name] = _unfold(_text_from_8bit(str(value)))
    try:
        name = view.get_filename() or ""
    except (TypeError, ValueError, LookupError, UnicodeError):  # e.g. mixed RFC 2231 sections
        repairs.append("attachment name unreadable")
        return ""
    return _decode_words(name, "attachment name", repairs)


def _inner_message(part: Message) -> Message | None:
    children = _children(part)
    return children[0] if children else None


def _message_bytes(inner: Message) -> bytes:
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=_EML_POLICY).flatten(inner)
    return buffer.getvalue()


def _subject_filename(inner: Message, repairs: list[str]) -> str:
    raw = next((str(v) for n, v in inner.raw_items() if str(n).strip().lower() == "subject"), "")
    subject = _header_text(_text_from_8bit(raw), "attachment name", repairs)
    # A slash in a subject ("Invoice 05/2024") is text, not a directory.
    return subject.replace("/", "-").replace("\\", "-") + ".eml" if subject else ""


def _unpack_tnef(data: bytes, number: int, repairs: list[str]) -> list[Attachment]:
    """The files inside a winmail.dat, or [] when it cannot be read or holds none."""
    if tnefparse is None:
        return []
    try:
        items = tnefparse.TNEF(data, do_checksum=False).attachments
        files = [(_tnef_name(item), bytes(item.data or b"")) for item in items]
    except Exception:  # tnefparse fails in many ways on damaged streams; winmail.dat is kept then
        return []
    unpacked: list[Attachment] = []
    for name, content in files:
        if not name and not content:
            continue
        content_type = _MIME_TABLE.guess_type(name, strict=False)[0] or "application/octet-stream"
        safe = _safe_filename(name, content_type, number + len(unpacked), repairs)
        unpacked.append(Attachment(safe, content_type, content))
    return unpacked


def _tnef_name(item: object) -> str:
    name = item.long_filename()  # type: ignore[attr-defined]
    if isinstance(name, bytes):
        name = _decode_unlabelled(name)
    return str(name or "").replace("\x00", "")


_SLASH_LOOKALIKES = str.maketrans({"\u2215": "/", "\u2044": "/", "\u29f8": "/", "\u29f9": "\\"})


def _safe_filename(name: str, content_type: str, number: int, repairs: list[str]) -> str:
    """A base name safe to show and to store, never empty, at most 200 characters."""
    # NFKC turns look-alikes into what they look like (full-width "．．／" is "../"), and the
    # slashes it leaves alone become slashes, so none of them survives as a path part.
    cleaned = _FILENAME_JUNK.sub("", unicodedata.normalize("NFKC", name)).translate(_SLASH_LOOKALIKES)
    parts = [piece.strip() for piece in cleaned.replace("\\", "/").split("/")]
    parts = [piece for piece in parts if piece not in ("", ".", "..")]
    safe = _DRIVE.sub("", parts[-1] if parts else "").strip().rstrip(". ")
    safe = _shorten(safe, _MAX_FILENAME)
    if name and safe != name:
        repairs.append(f"attachment {number}: file name made safe")
    return safe or f"attachment-{number}{_extension(content_type)}"


def _shorten(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) <= 16:
        return stem[: limit - len(extension) - 1].rstrip() + "." + extension
    return name[:limit]


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or _MIME_TABLE.guess_extension(content_type) or ".bin"


# --- delivery reports and the content digest ------------------------------------------------


def _report(message: Message) -> tuple[bool, tuple[str, ...]]:
    """Whether this is a delivery report, and the Message-IDs of the mail it reports on."""
    if message.get_content_type() != "multipart/report":
        return False, ()
    report_type = message.get_param("report-type", "")
    is_delivery = collapse_rfc2231_value(report_type).strip().lower() == "delivery-status"
    ids: list[str] = []
    for part in _children(message) or []:
        headers = _reported_headers(part)
        for name, value in headers.raw_items() if headers is not None else ():
            if str(name).strip().lower() == "message-id":
                bare = normalize_message_id(_unfold(_text_from_8bit(str(value))))
                ids.extend([bare] if bare else [])
    return is_delivery, tuple(dict.fromkeys(ids))


def _reported_headers(part: Message) -> Message | None:
    content_type = part.get_content_type()
    if content_type not in _FORWARDED_TYPES and content_type not in _HEADER_BLOCK_TYPES:
        return None
    inner = _inner_message(part)
    if inner is not None:
        return inner
    return BytesHeaderParser(policy=policy.compat32).parsebytes(_payload_bytes(part, "report", []))


def _content_digest(headers: dict[str, tuple[str, ...]], subject: str, body_text: str) -> str:
    """sha256 over what the sender wrote, not over what relays added on the way."""
    body = "\n".join(line.rstrip() for line in body_text.split("\n")).strip()
    canonical = json.dumps(
        [_first(headers, "from"), _first(headers, "date"), subject, body], ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
