"""Tests for parsing: the shared corpus, then one small hand-written message per kind of bug."""

from __future__ import annotations

import contextlib
import json
import logging
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketure_mail.errors import ParseError
from ticketure_mail.model import Address, ParsedMail
from ticketure_mail.htmltext import html_to_text
from ticketure_mail.parsing import message_ids, normalize_message_id, parse_mail

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _corpus_cases() -> list[str]:
    # A missing corpus must fail the run, so it yields one case that reports it.
    if not CORPUS.is_dir():
        return ["<corpus missing>"]
    return sorted(path.name for path in CORPUS.glob("*.eml")) or ["<corpus empty>"]


def _load(name: str) -> tuple[bytes, dict]:
    eml = CORPUS / name
    assert eml.is_file(), f"corpus not found at {CORPUS} ({name})"
    expect = json.loads(eml.with_suffix(".expect.json").read_text(encoding="utf-8"))
    return eml.read_bytes(), expect


def raw(*headers: str | bytes, body: str | bytes = "Hello.\r\n") -> bytes:
    """A message from header lines and a body, CRLF line ends, str parts encoded as UTF-8."""
    lines = [h if isinstance(h, bytes) else h.encode("utf-8") for h in headers]
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    return b"\r\n".join(lines) + b"\r\n\r\n" + data


BASIC = ("From: Pat Doe <pat@example.com>", "Date: Mon, 03 Jun 2024 10:00:00 +0000")


def mime(content_type: str, body: str | bytes, *extra: str) -> bytes:
    """A MIME message from Pat with one top-level Content-Type."""
    return raw(
        *BASIC, "Subject: test", "MIME-Version: 1.0", f"Content-Type: {content_type}", *extra, body=body
    )


# --- the corpus -----------------------------------------------------------------------------


def test_corpus_is_present() -> None:
    assert CORPUS.is_dir(), f"the shared corpus is missing: {CORPUS}"
    assert list(CORPUS.glob("*.eml")), f"the shared corpus holds no .eml file: {CORPUS}"


@pytest.mark.parametrize("name", _corpus_cases())
def test_corpus_case(name: str) -> None:
    data, expect = _load(name)
    mail = parse_mail(data)
    if "subject" in expect:
        assert mail.subject == expect["subject"]
    if "from" in expect:
        assert mail.from_address is not None
        assert mail.from_address.address == expect["from"]
    if "body_contains" in expect:
        assert expect["body_contains"] in mail.body_text
    if "attachments" in expect:
        assert [a.filename for a in mail.attachments] == expect["attachments"]
    if "duplicate_of" in expect:
        original = parse_mail(_load(expect["duplicate_of"])[0])
        assert mail.message_id is not None
        assert mail.message_id == original.message_id


def test_corpus_missing_message_id_has_a_stable_digest() -> None:
    data, _ = _load("012-missing-message-id.eml")
    first, second = parse_mail(data), parse_mail(data)
    assert first.message_id is None
    assert len(first.content_digest) == 64
    assert first.content_digest == second.content_digest
    # A relay adding a trace header on the second delivery must not change it either.
    refetched = parse_mail(
        b"Received: from mx2.example.org by imap.example.org; Tue, 11 Jun 2024 11:11:20 +0000\r\n" + data
    )
    assert refetched.content_digest == first.content_digest


def test_corpus_delivery_report_names_the_original() -> None:
    mail = parse_mail(_load("019-dsn-bounce.eml")[0])
    assert mail.is_delivery_report
    assert mail.reported_message_ids == ("ack-001043@help.example.org",)
    assert mail.return_path == ""
    # The reported message's headers never leak into the report's own fields.
    assert mail.message_id == "20240614071400.6A1B2@mx.example.org"


def test_corpus_forwarded_message_keeps_outer_fields() -> None:
    mail = parse_mail(_load("033-forwarded-rfc822.eml")[0])
    assert mail.message_id == "fwd-0624-0845@mail.example.com"
    assert mail.from_address == Address("Kai Jensen", "kai.jensen@example.com")
    assert "Thank you for your order" not in mail.body_text
    (forwarded,) = mail.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.data.startswith(b"From: Example Shop <shop@example.org>\r\n")
    assert b"Thank you for your order 5531." in forwarded.data


def test_corpus_tnef_file_is_unpacked() -> None:
    (quote,) = parse_mail(_load("030-tnef-winmail.eml")[0]).attachments
    assert quote.data.startswith(b"Quote Q-2209\r\n")


def test_corpus_large_message_parses_whole() -> None:
    mail = parse_mail(_load("041-oversized-message.eml")[0])
    (pdf,) = mail.attachments
    assert pdf.data.startswith(b"%PDF-1.4")
    assert pdf.size > 2_500_000


# --- the contract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"   \r\n\t ", b"\r\n\r\n"],
    ids=["empty", "whitespace", "blank lines"],
)
def test_not_a_mail_raises_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_mail(data)


def test_text_instead_of_bytes_raises_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_mail("From: a@example.com\r\n\r\nhi")  # type: ignore[arg-type]


def test_body_without_headers_is_still_a_mail() -> None:
    mail = parse_mail(b"just some words\r\n")
    assert mail.from_address is None
    assert mail.subject == ""
    assert "just some words" in mail.body_text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_anything_but_parse_error(data: bytes) -> None:
    try:
        mail = parse_mail(data)
    except ParseError:
        return
    assert isinstance(mail, ParsedMail)


_SEED = mime(
    'multipart/mixed; boundary="b"',
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi =?utf-8?q?x?=\r\n"
    "--b\r\nContent-Type: application/pdf; name*0*=UTF-8''a%C3%A9; name*1=\"b.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n",
    "To: =?utf-8?q?A=2C_B?= <a@example.com>, c, <d@x>",
    "References: <a@b> junk <c@d>",
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.binary(max_size=4)), max_size=8))
def test_damaged_messages_never_raise(edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(_SEED)
    for position, replacement in edits:
        data[position : position + len(replacement)] = replacement
    with contextlib.suppress(ParseError):
        parse_mail(bytes(data))


def test_mail_parser_logger_is_quiet() -> None:
    assert logging.getLogger("mailparser").getEffectiveLevel() >= logging.ERROR


# --- subject ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            b"Subject: =?utf-8?Q?ge=C3=A4n?=\r\n =?utf-8?Q?dert?= heute",
            "geändert heute",
            id="folded-adjacent-words",
        ),
        pytest.param(b"Subject: =?utf-8?b?4oKs?==?utf-8?b?4oKs?=", "€€", id="adjacent-without-space"),
        pytest.param(b"Subject: =?utf-8?q?=E2=82?= =?utf-8?q?=AC?=", "€", id="character-split-across-words"),
        pytest.param(b"Subject: =?utf-8?q?a?= b =?utf-8?q?c?=", "a b c", id="text-between-words-kept"),
        pytest.param(
            b"Subject: =?koi8-r?B?8NLPwszFzcEg0yDQ0snO1MXSz80=?=", "Проблема с принтером", id="koi8-r-b"
        ),
        pytest.param(b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=", "Grüße", id="latin-1-q"),
        pytest.param(b"Subject: =?windows-1251?B?z/Do4uXy?=", "Привет", id="windows-1251-b"),
        pytest.param(b"Subject: =?utf-8*de?q?Gr=C3=BC=C3=9Fe?=", "Grüße", id="rfc2231-language-tag"),
        pytest.param(b"Subject: =?utf-8?b?w6k?=", "é", id="missing-base64-padding"),
        pytest.param(
            b"Subject: =?utf-8?q?Urgent=3A_refund=0D=0ABcc=3A_x=40example=2Eorg?=",
            "Urgent: refund Bcc: x@example.org",
            id="crlf-in-encoded-word",
        ),
        pytest.param("Subject: urgent – facture".encode(), "urgent – facture", id="raw-utf-8"),
        pytest.param(b"Subject: caf\xe9 cr\xe8me", "café crème", id="raw-latin-1-fallback"),
        pytest.param(b"Subject: =?x-no-such-charset?q?abc?=", "abc", id="unknown-charset"),
        pytest.param(b"Subject: =?us-ascii?q?caf=C3=A9?=", "café", id="mislabelled-ascii-is-utf-8"),
        pytest.param(b"Subject: =?utf-8?q?caf=E9?=", "caf\ufffd", id="invalid-bytes-replaced"),
        pytest.param(b"Subject: =?base64?q?abc?=", "abc", id="bytes-codec-name-refused"),
        pytest.param(b"Subject: a\x00b", "ab", id="nul-removed"),
        pytest.param(b"Subject: a\tb \x0b c\x1b[31md", "a b c [31md", id="controls-become-spaces"),
        pytest.param(b"Subject:    lots   of\r\n\t  space   ", "lots of space", id="whitespace-collapsed"),
        pytest.param(b"Subject: AW: SV: Re: thing", "AW: SV: Re: thing", id="reply-prefixes-kept"),
        pytest.param(b"X-Other: nothing", "", id="missing-subject"),
    ],
)
def test_subject_is_decoded_to_one_clean_line(header: bytes, expected: str) -> None:
    mail = parse_mail(raw(*BASIC, header))
    assert mail.subject == expected
    assert mail.header("subject") == expected  # "" when the header is absent, too


def test_control_characters_in_subject_are_reported() -> None:
    mail = parse_mail(raw(*BASIC, b"Subject: =?utf-8?q?a=0D=0ABcc=3A_x?="))
    assert mail.subject == "a Bcc: x"
    assert "subject: control characters replaced" in mail.defects


def test_first_subject_wins_when_repeated() -> None:
    mail = parse_mail(raw(*BASIC, "Subject: first", "Subject: second"))
    assert mail.subject == "first"
    assert mail.headers["subject"] == ("first", "second")


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            b"=?utf-8?q?Doe=2C_Jane?= <jane.doe@example.com>",
            [("Doe, Jane", "jane.doe@example.com")],
            id="encoded-comma",
        ),
        pytest.param(
            b'=?utf-8?q?M=C3=BCller=2C_Kim?= <kim@example.org>, "Lee, Sam" <sam@example.com>',
            [("Müller, Kim", "kim@example.org"), ("Lee, Sam", "sam@example.com")],
            id="encoded-and-quoted-comma",
        ),
        pytest.param(
            b"Sam Lee, Jr. <sam.lee@example.com>",
            [("Sam Lee, Jr.", "sam.lee@example.com")],
            id="unquoted-comma",
        ),
        pytest.param(
            b"=?utf-8?q?Doe,_Jane?= <jd@example.com>",
            [("Doe, Jane", "jd@example.com")],
            id="raw-comma-inside-encoded-word",
        ),
        pytest.param(b"undisclosed-recipients:;", [], id="empty-group"),
        pytest.param(
            b"Team: a@example.com, B <b@example.com>;",
            [("", "a@example.com"), ("B", "b@example.com")],
            id="group-members",
        ),
        pytest.param(
            b"a@example.com, b@example.com", [("", "a@example.com"), ("", "b@example.com")], id="several"
        ),
        pytest.param(b"Sam Lee", [], id="phrase-without-address"),
        pytest.param(b"sam", [], id="no-domain"),
        pytest.param(b"<sam>", [], id="angle-no-domain"),
        pytest.param(b"sam@", [], id="empty-domain"),
        pytest.param(b"Jane.Doe@EXAMPLE.COM", [("", "Jane.Doe@example.com")], id="domain-lower-cased-only"),
        pytest.param(
            b"jane@example.com (Jane =?utf-8?q?D=C3=B6e?=)",
            [("Jane Döe", "jane@example.com")],
            id="name-in-comment",
        ),
        pytest.param(
            "José Núñez <josé.núñez@example.com>".encode(),
            [("José Núñez", "josé.núñez@example.com")],
            id="eai-utf-8-local-part",
        ),
        pytest.param(b'"Zo\xeb" <zoe@example.com>', [("Zoë", "zoe@example.com")], id="raw-latin-1-name"),
        pytest.param(
            b'"Jane \\"JD\\" Doe" <jd@example.com>', [('Jane "JD" Doe', "jd@example.com")], id="escaped-quote"
        ),
        pytest.param(
            b'"unclosed <jane@example.com>', [("unclosed", "jane@example.com")], id="unbalanced-quote"
        ),
        pytest.param(b"<@relay.example:user@example.com>", [("", "user@example.com")], id="source-route"),
        pytest.param(
            b"=?utf-8?q?a=0D=0ABcc:_x?= <x@example.com>", [("a Bcc: x", "x@example.com")], id="crlf-in-name"
        ),
        pytest.param(b"Pat\r\n Doe <pat@example.com>", [("Pat Doe", "pat@example.com")], id="folded"),
    ],
)
def test_address_lists(header: bytes, expected: list[tuple[str, str]]) -> None:
    mail = parse_mail(raw(b"To: " + header, "Subject: x"))
    assert [tuple(a) for a in mail.to] == expected
    assert all("@" in a.address and a.address.rsplit("@", 1)[1] for a in mail.to)


def test_from_is_the_first_complete_mailbox() -> None:
    mail = parse_mail(raw("From: Sam Lee, first@example.com, second@example.com", "Subject: x"))
    assert mail.from_address == Address("", "first@example.com")
    assert any("mailboxes" in d for d in mail.defects)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(("Subject: no sender",), id="missing"),
        pytest.param(("From: Sam Lee", "Subject: x"), id="no-domain"),
        pytest.param(("From: undisclosed-recipients:;", "Subject: x"), id="group"),
        pytest.param(("From: <>", "Subject: x"), id="null"),
    ],
)
def test_from_address_is_none_without_a_complete_mailbox(headers: tuple[str, ...]) -> None:
    assert parse_mail(raw(*headers)).from_address is None


def test_other_address_fields() -> None:
    mail = parse_mail(
        raw(
            "From: Pat <pat@example.com>",
            "Sender: Relay <relay@Lists.Example.com>",
            "Reply-To: Desk <desk@example.com>, other@example.com",
            "To: help@example.org",
            "To: second-to-header@example.org",
            "Cc: Kim <kim@example.org>",
            "Return-Path: <bounces@Example.ORG>",
        )
    )
    assert mail.sender == Address("Relay", "relay@lists.example.com")
    assert mail.reply_to == (Address("Desk", "desk@example.com"), Address("", "other@example.com"))
    assert [a.address for a in mail.to] == ["help@example.org", "second-to-header@example.org"]
    assert mail.cc == (Address("Kim", "kim@example.org"),)
    assert mail.return_path == "bounces@example.org"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Return-Path: <>", ""),
        (b"Return-Path:  < >", ""),
        (b"X-None: 1", None),
        (b"Return-Path: <MAILER-DAEMON>", None),
    ],
    ids=["null", "null-spaced", "absent", "no-domain"],
)
def test_return_path(header: bytes, expected: str | None) -> None:
    assert parse_mail(raw(*BASIC, header)).return_path == expected


# --- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a.b@example.com>", "a.b@example.com"),
        ("   <a.b@example.com>  ", "a.b@example.com"),
        ("\r\n <a.b@\r\n example.com>", "a.b@example.com"),
        ("a.b@example.com", "a.b@example.com"),
        ("<first@example.com> <second@example.com>", "first@example.com"),
        ("", None),
        ("   ", None),
        ("<>", None),
        ("< >", None),
        ("some junk words", None),
        ("<" + "x" * 1200 + "@example.com>", None),
    ],
)
def test_normalize_message_id(value: str, expected: str | None) -> None:
    assert normalize_message_id(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@example.com>", ("a@example.com",)),
        ("<a@example.com> <b@example.com>", ("a@example.com", "b@example.com")),
        ("<a@example.com>,<b@example.com>", ("a@example.com", "b@example.com")),
        ("<a@example.com>\r\n\t<b@example.com>", ("a@example.com", "b@example.com")),
        (
            "junk <a@example.com> (Jane's message) more junk <b@example.com> <> trailing",
            ("a@example.com", "b@example.com"),
        ),
        ("a@example.com", ("a@example.com",)),
        ("", ()),
        ("no ids here", ()),
        ("<unclosed@example.com", ()),
    ],
)
def test_message_ids(value: str, expected: tuple[str, ...]) -> None:
    assert message_ids(value) == expected


def test_message_id_whitespace_does_not_change_the_id() -> None:
    plain = parse_mail(raw(*BASIC, "Message-ID: <dup@example.com>"))
    spaced = parse_mail(raw(*BASIC, "Message-ID:   <dup@example.com>  "))
    folded = parse_mail(raw(*BASIC, "Message-ID:\r\n <dup@example.com>"))
    assert plain.message_id == spaced.message_id == folded.message_id == "dup@example.com"


def test_duplicated_message_id_takes_the_first() -> None:
    mail = parse_mail(raw(*BASIC, "Message-ID: <one@example.com>", "Message-ID: <two@example.com>"))
    assert mail.message_id == "one@example.com"
    assert any(d.startswith("message-id: header repeated") for d in mail.defects)


def test_threading_headers_with_junk_and_overlong_lines() -> None:
    many = " ".join(f"<ref{i}@example.com>" for i in range(300))  # far beyond 998 characters
    mail = parse_mail(
        raw(
            *BASIC,
            "In-Reply-To: <parent@example.com> (from Jane)",
            f"References: junk {many} <> more-junk <last@example.com>",
        )
    )
    assert mail.in_reply_to == ("parent@example.com",)
    assert len(mail.references) == 301
    assert mail.references[0] == "ref0@example.com"
    assert mail.references[-1] == "last@example.com"


def test_missing_message_id() -> None:
    mail = parse_mail(raw(*BASIC, "Subject: x"))
    assert mail.message_id is None
    assert "message-id: missing" in mail.defects


# --- date -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Date: Tue, 04 Jun 2024 09:12:44 +0200", datetime(2024, 6, 4, 7, 12, 44, tzinfo=UTC)),
        ("Date: 4 Jun 2024 09:12:44 -0000", datetime(2024, 6, 4, 9, 12, 44, tzinfo=UTC)),
        ("Date: Fri, 14 Jun 2024 09:14:00 +0200 (CEST)", datetime(2024, 6, 14, 7, 14, tzinfo=UTC)),
        ("Date: Fre, 31 Jun 2024 25:61:00 +0200", None),
        ("Date: yesterday", None),
        ("Date: ", None),
        ("X-No-Date: 1", None),
    ],
    ids=["offset", "no-weekday", "comment", "impossible", "words", "empty", "missing"],
)
def test_date(header: str, expected: datetime | None) -> None:
    mail = parse_mail(raw("From: a@example.com", header))
    assert mail.date == expected
    if mail.date is not None:
        assert mail.date.utcoffset() is not None
        assert mail.date.tzinfo == UTC


# --- body -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "extra", "body", "expected"),
    [
        pytest.param(
            'text/plain; charset="koi8-r"',
            "Content-Transfer-Encoding: 8bit",
            "Принтер не печатает".encode("koi8-r"),
            "Принтер не печатает",
            id="koi8-r",
        ),
        pytest.param(
            "text/plain; charset=iso-8859-2",
            "Content-Transfer-Encoding: quoted-printable",
            b"Dobr=FD den, =E8=ED=B9n=EDk",
            "Dobrý den, číšník",
            id="iso-8859-2-qp",
        ),
        pytest.param(
            "text/plain; charset=windows-1251",
            "Content-Transfer-Encoding: base64",
            b"z/Do4uXy\r\n",
            "Привет",
            id="windows-1251-base64",
        ),
        pytest.param(
            "text/plain;",
            "Content-Transfer-Encoding: 7bit",
            "ログインできません".encode("iso-2022-jp"),
            "ログインできません",
            id="iso-2022-jp-without-charset",
        ),
        pytest.param(
            "text/plain",
            "Content-Transfer-Encoding: 8bit",
            "naïve – ok".encode(),
            "naïve – ok",
            id="no-charset-utf-8",
        ),
        pytest.param(
            "text/plain",
            "Content-Transfer-Encoding: 8bit",
            "naïve".encode("latin-1"),
            "naïve",
            id="no-charset-latin-1",
        ),
        pytest.param(
            "text/plain; charset=x-martian",
            "Content-Transfer-Encoding: 8bit",
            "ça va".encode(),
            "ça va",
            id="unknown-charset",
        ),
        pytest.param(
            "text/plain; charset=us-ascii",
            "Content-Transfer-Encoding: 8bit",
            "ça va".encode(),
            "ça va",
            id="mislabelled-ascii",
        ),
        pytest.param(
            "text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            b"SGVsbG8gV29ybGQhIQ==\r\nIGFnYWlu\r\n",
            "Hello World!! again",
            id="padding-mid-stream",
        ),
        pytest.param(
            "text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
            b"SGVs*bG8g!V29y\r\nbGQ",
            "Hello World",
            id="base64-junk-and-no-padding",
        ),
        pytest.param(
            "text/plain; charset=utf-8",
            "Content-Transfer-Encoding: quoted-printable",
            b"caf=C3=A9 =ZZ soft=\r\nbreak",
            "café =ZZ softbreak",
            id="broken-quoted-printable",
        ),
        pytest.param(
            "text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            b"a\x00b\x00c\r\nnext",
            "abc\nnext",
            id="nul-removed",
        ),
    ],
)
def test_body_charsets_and_encodings(content_type: str, extra: str, body: bytes, expected: str) -> None:
    mail = parse_mail(mime(content_type, body, extra))
    assert mail.body_text.strip() == expected
    assert "\x00" not in mail.body_text


def test_broken_base64_is_reported() -> None:
    mail = parse_mail(
        mime("text/plain; charset=utf-8", b"SGVs*bG8=\r\n", "Content-Transfer-Encoding: base64")
    )
    assert mail.body_text == "Hello"
    assert "body: invalid base64 repaired" in mail.defects


def test_nul_bytes_removed_everywhere() -> None:
    mail = parse_mail(
        raw(b"From: Pat\x00 <pat@example.com>", b"Subject: a\x00b", b"X-Thing: c\x00d", body=b"e\x00f")
    )
    assert mail.subject == "ab"
    assert mail.headers["x-thing"] == ("cd",)
    assert mail.from_address == Address("Pat", "pat@example.com")
    assert mail.body_text == "ef"


def test_html_only_body_is_turned_into_text() -> None:
    html = (
        "<html><head><title>t</title><style>p{color:red}</style><script>alert('x')</script></head>"
        "<body><p>Hello&nbsp;there &amp; welcome</p><div>line two<br>line three</div>"
        "<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>"
        "<p></p><p></p><p></p><p>end &lt;tag&gt;</p></body></html>"
    )
    mail = parse_mail(mime("text/html; charset=utf-8", html))
    assert mail.body_html is not None and "<style>" in mail.body_html
    assert mail.body_text == "Hello there & welcome\n\nline two\nline three\n\none\n\ntwo\n\na b\n\nend <tag>"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>if a < b and c<d then</p>", "if a < b and c<d then"),
        ("<p>x</p>" + "</" * 200_000, "x\n" + "</" * 200_000),  # html.parser alone: minutes
        ("<p>y</p><a" + " x" * 200_000, "y\n<a" + " x" * 200_000),
        ("<!--[if mso]><table><tr><td>o</td></tr></table><![endif]--><p>z</p>", "z"),  # Outlook's comments stay hidden
    ],
)
def test_a_less_than_sign_that_opens_no_tag_is_text(html: str, text: str) -> None:
    # A "<" that no ">" closes made html.parser quadratic: a few MB of "</" held a parser for
    # hours. Such a "<" is text, as a browser shows it.
    assert html_to_text(html) == text


def test_html_charset_is_honoured() -> None:
    html = "<p>Заказ 4471 не доставлен</p>".encode("windows-1251")
    mail = parse_mail(mime("text/html; charset=windows-1251", html, "Content-Transfer-Encoding: 8bit"))
    assert mail.body_text == "Заказ 4471 не доставлен"


def test_html_meta_charset_is_used_without_a_parameter() -> None:
    html = '<html><head><meta charset="koi8-r"></head><body>Привет</body></html>'.encode("koi8-r")
    mail = parse_mail(mime("text/html", html, "Content-Transfer-Encoding: 8bit"))
    assert mail.body_text == "Привет"


ALTERNATIVE_WITH_CALENDAR = (
    "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe plain words.\r\n"
    "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>The <b>HTML</b> words.</p>\r\n"
    "--alt\r\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
    "--alt--\r\n"
)


def test_alternative_takes_the_plain_part_and_not_the_calendar() -> None:
    mail = parse_mail(mime('multipart/alternative; boundary="alt"', ALTERNATIVE_WITH_CALENDAR))
    assert mail.body_text.strip() == "The plain words."
    assert mail.body_html is not None and "<b>HTML</b>" in mail.body_html
    assert mail.attachments == ()


def test_alternative_without_plain_uses_the_html() -> None:
    body = (
        "--alt\r\nContent-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n"
        "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Only HTML</p>\r\n--alt--\r\n"
    )
    assert parse_mail(mime('multipart/alternative; boundary="alt"', body)).body_text == "Only HTML"


def test_empty_plain_alternative_falls_back_to_html() -> None:
    body = (
        "--alt\r\nContent-Type: text/plain\r\n\r\n\r\n"
        "--alt\r\nContent-Type: text/html\r\n\r\n<p>Real text</p>\r\n--alt--\r\n"
    )
    assert parse_mail(mime('multipart/alternative; boundary="alt"', body)).body_text == "Real text"


SIGNED = (
    "This is an S/MIME signed message\r\n"
    "--sig\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSigned words.\r\n"
    "--sig\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
    "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7s\r\n\r\nMIIBAA==\r\n"
    "--sig--\r\n"
)


def test_signed_message_body_and_no_signature_attachment() -> None:
    mail = parse_mail(
        mime('multipart/signed; protocol="application/pkcs7-signature"; boundary="sig"', SIGNED)
    )
    assert mail.body_text.strip() == "Signed words."
    assert mail.attachments == ()


def test_mixed_takes_the_first_inline_text_part() -> None:
    body = (
        "--m\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\nnot the body\r\n"
        "--m\r\nContent-Type: text/plain\r\n\r\nthe body\r\n"
        "--m\r\nContent-Type: text/plain\r\n\r\na later part\r\n--m--\r\n"
    )
    mail = parse_mail(mime('multipart/mixed; boundary="m"', body))
    assert mail.body_text.strip() == "the body"
    assert [a.filename for a in mail.attachments] == ["notes.txt"]


FORWARD = (
    "--f\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
    "--f\r\nContent-Type: message/rfc822\r\n\r\n"
    "From: Shop <shop@example.org>\r\nSubject: Invoice 05/2024\r\nMessage-ID: <inner@example.org>\r\n"
    "Date: Fri, 21 Jun 2024 17:00:00 +0000\r\nIn-Reply-To: <inner-parent@example.org>\r\n\r\nInner words.\r\n"
    "--f--\r\n"
)


def test_forwarded_message_is_an_attachment_named_after_its_subject() -> None:
    mail = parse_mail(mime('multipart/mixed; boundary="f"', FORWARD, "Message-ID: <outer@example.com>"))
    assert mail.body_text.strip() == "See below."
    assert mail.message_id == "outer@example.com"
    assert mail.subject == "test"
    assert mail.in_reply_to == ()
    assert mail.from_address == Address("Pat Doe", "pat@example.com")
    assert [a.filename for a in mail.attachments] == ["Invoice 05-2024.eml"]
    assert b"Inner words." in mail.attachments[0].data


def test_multipart_without_its_boundary_still_gives_text() -> None:
    mail = parse_mail(mime('multipart/mixed; boundary="never"', "Just text, no parts at all.\r\n"))
    assert "Just text, no parts at all." in mail.body_text
    assert any("Boundary" in d for d in mail.defects)


# --- attachments ------------------------------------------------------------------------------


def _with_attachment(*part_headers: str, payload: str = "SGVsbG8=") -> bytes:
    part = "\r\n".join(part_headers)
    body = f"--a\r\nContent-Type: text/plain\r\n\r\nbody\r\n--a\r\n{part}\r\n\r\n{payload}\r\n--a--\r\n"
    return mime('multipart/mixed; boundary="a"', body)


@pytest.mark.parametrize(
    ("part_headers", "expected"),
    [
        pytest.param(
            (
                "Content-Type: application/pdf",
                "Content-Transfer-Encoding: base64",
                "Content-Disposition: attachment;\r\n filename*0*=UTF-8''Pr%C3%BCfbericht%20;\r\n filename*1*=M%C3%A4rz.pdf",
            ),
            "Prüfbericht März.pdf",
            id="rfc2231-continuations",
        ),
        pytest.param(
            (
                "Content-Type: text/plain",
                "Content-Transfer-Encoding: base64",
                "Content-Disposition: attachment; filename*=ISO-8859-1'de'Gr%FC%DFe.txt",
            ),
            "Grüße.txt",
            id="rfc2231-charset-language",
        ),
        pytest.param(
            (
                'Content-Type: application/pdf; name*0="long "; name*1="name.pdf"',
                "Content-Transfer-Encoding: base64",
            ),
            "long name.pdf",
            id="rfc2231-plain-continuations",
        ),
        pytest.param(
            (
                'Content-Type: application/pdf; name="=?utf-8?b?UsOpc3Vtw6kucGRm?="',
                "Content-Transfer-Encoding: base64",
            ),
            "Résumé.pdf",
            id="rfc2047-name",
        ),
        pytest.param(
            (
                "Content-Type: application/pdf",
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="Prüfung.pdf"',
            ),
            "Prüfung.pdf",
            id="raw-utf-8-name",
        ),
        pytest.param(
            (
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="../../etc/passwd"',
            ),
            "passwd",
            id="dot-dot-path",
        ),
        pytest.param(
            (
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="C:\\\\x\\\\evil.exe"',
            ),
            "evil.exe",
            id="windows-path",
        ),
        pytest.param(
            (
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="C:evil.exe"',
            ),
            "evil.exe",
            id="drive-relative",
        ),
        pytest.param(
            (
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="/etc/shadow"',
            ),
            "shadow",
            id="absolute-path",
        ),
        pytest.param(
            (
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                "Content-Disposition: attachment; filename*=UTF-8''re%07po%1Brt%00.txt%0D%0A",
            ),
            "report.txt",
            id="control-characters",
        ),
        pytest.param(
            (
                "Content-Type: application/octet-stream",
                "Content-Transfer-Encoding: base64",
                "Content-Disposition: attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe",
            ),
            "invoicefdp.exe",
            id="bidi-override",
        ),
        pytest.param(
            (
                "Content-Type: application/pdf",
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="  .. "',
            ),
            "attachment-1.pdf",
            id="nothing-left",
        ),
        pytest.param(
            (
                "Content-Type: application/pdf",
                "Content-Transfer-Encoding: base64",
                "Content-Disposition: attachment",
            ),
            "attachment-1.pdf",
            id="unnamed-attachment",
        ),
        pytest.param(
            ("Content-Type: application/pdf", "Content-Transfer-Encoding: base64"),
            "attachment-1.pdf",
            id="unnamed-file-part",
        ),
        pytest.param(
            (
                "Content-Type: application/x-weird-thing",
                "Content-Transfer-Encoding: base64",
                "Content-Disposition: attachment",
            ),
            "attachment-1.bin",
            id="unknown-type",
        ),
    ],
)
def test_attachment_names(part_headers: tuple[str, ...], expected: str) -> None:
    (attachment,) = parse_mail(_with_attachment(*part_headers)).attachments
    assert attachment.filename == expected


def test_long_names_keep_their_extension() -> None:
    name = "x" * 300 + ".pdf"
    data = _with_attachment(
        "Content-Type: application/pdf",
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{name}"',
    )
    (attachment,) = parse_mail(data).attachments
    assert len(attachment.filename) == 200
    assert attachment.filename.endswith("x.pdf")


@pytest.mark.parametrize(
    ("encoding", "payload", "expected"),
    [
        ("base64", "SGVsbG8sIGZpbGUh", b"Hello, file!"),
        ("base64", "SGVsbG8s*IGZp\r\nbGUh==\r\nJw", b"Hello, file!'"),
        ("quoted-printable", "caf=C3=A9=\r\n=00end", b"caf\xc3\xa9\x00end"),
        ("7bit", "plain", b"plain"),
    ],
    ids=["base64", "broken-base64", "quoted-printable", "7bit"],
)
def test_attachment_payload_is_decoded_bytes(encoding: str, payload: str, expected: bytes) -> None:
    data = _with_attachment(
        "Content-Type: application/octet-stream; name=f.bin",
        f"Content-Transfer-Encoding: {encoding}",
        payload=payload,
    )
    (attachment,) = parse_mail(data).attachments
    assert attachment.data == expected
    assert attachment.content_type == "application/octet-stream"


def test_attached_calendar_file_is_an_attachment() -> None:
    body = (
        f'--mix\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n{ALTERNATIVE_WITH_CALENDAR}'
        "--mix\r\nContent-Type: application/ics; name=invite.ics\r\nContent-Disposition: attachment; filename=invite.ics\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nQkVHSU46VkNBTEVOREFS\r\n--mix--\r\n"
    )
    mail = parse_mail(mime('multipart/mixed; boundary="mix"', body))
    assert [a.filename for a in mail.attachments] == ["invite.ics"]
    assert mail.attachments[0].data == b"BEGIN:VCALENDAR"


def test_inline_image_of_html_body_is_not_an_attachment_but_a_named_one_is() -> None:
    body = (
        '--rel\r\nContent-Type: text/html\r\n\r\n<p>logo <img src="cid:logo"></p>\r\n'
        "--rel\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n"
        "--rel\r\nContent-Type: image/png; name=chart.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n"
        "--rel--\r\n"
    )
    mail = parse_mail(mime('multipart/related; boundary="rel"', body))
    assert [a.filename for a in mail.attachments] == ["chart.png"]


TNEF_WITH_QUOTE = (
    "eJ8+IjxaAQaQCAAEAAAAAAABAAEAAQeQBgAIAAAA5AQAAAAAAADoAAEIgAcAGAAAAElQTS5NaWNyb3NvZnQgTWFpbC5Ob3Rl"
    "ADEIAgKQBgAOAAAAAQD//////////wAAAAD5BwIQgAEACgAAAHF1b3RlLnR4dAC8AwIPgAYAQwAAAFF1b3RlIFEtMjIwOQ0K"
    "MyB4IFVTQi1DIGRvY2tpbmcgc3RhdGlvbg0KVmFsaWQgdW50aWwgMzEgSnVseSAyMDI0DQqQEw=="
)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (TNEF_WITH_QUOTE, ["quote.txt"]),
        ("bm90IHRuZWYgYXQgYWxs", ["winmail.dat"]),  # "not tnef at all"
        (TNEF_WITH_QUOTE[:60], ["winmail.dat"]),  # cut short
    ],
    ids=["unpacked", "garbage", "truncated"],
)
def test_tnef_is_unpacked_or_kept_whole(payload: str, expected: list[str]) -> None:
    data = _with_attachment(
        'Content-Type: application/ms-tnef; name="winmail.dat"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="winmail.dat"',
        payload=payload,
    )
    mail = parse_mail(data)
    assert [a.filename for a in mail.attachments] == expected
    assert mail.body_text.strip() == "body"


# --- headers, reports, digest -----------------------------------------------------------------


def test_headers_are_all_kept_decoded_and_in_order() -> None:
    mail = parse_mail(
        raw(
            "Received: from a\r\n\tby b; Mon, 3 Jun 2024 10:00:00 +0000",
            "Received: from c by d",
            "From: =?utf-8?q?J=C3=B6rg?= <j@example.com>",
            b"X-Evil: =?utf-8?q?one=0D=0Atwo=00?=",
            "Subject: hi",
        )
    )
    assert list(mail.headers) == ["received", "from", "x-evil", "subject"]
    assert mail.headers["received"] == ("from a by b; Mon, 3 Jun 2024 10:00:00 +0000", "from c by d")
    assert mail.headers["from"] == ("Jörg <j@example.com>",)
    assert mail.headers["x-evil"] == ("one two",)
    assert mail.header("X-EVIL") == "one two"


def _report(report_type: str, original: str) -> bytes:
    body = (
        "--r\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\n"
        f"--r\r\n{original}\r\n--r--\r\n"
    )
    return mime(f'multipart/report; report-type={report_type}; boundary="r"', body, "Return-Path: <>")


@pytest.mark.parametrize(
    "original",
    [
        "Content-Type: text/rfc822-headers\r\n\r\nFrom: help@example.org\r\nMessage-ID:\r\n  <ack-1@help.example.org>\r\n",
        "Content-Type: message/rfc822\r\n\r\nFrom: help@example.org\r\nMessage-ID: <ack-1@help.example.org>\r\n\r\nbody\r\n",
    ],
    ids=["headers-only", "whole-message"],
)
def test_delivery_report(original: str) -> None:
    mail = parse_mail(_report("delivery-status", original))
    assert mail.is_delivery_report
    assert mail.reported_message_ids == ("ack-1@help.example.org",)
    assert mail.body_text.strip() == "Delivery failed."
    assert mail.from_address == Address("Pat Doe", "pat@example.com")


def test_other_reports_are_not_delivery_reports() -> None:
    mail = parse_mail(_report("disposition-notification", "Content-Type: text/plain\r\n\r\nx"))
    assert not mail.is_delivery_report
    assert not parse_mail(raw(*BASIC, "Subject: x")).is_delivery_report


def test_digest_ignores_trace_headers_and_line_ends() -> None:
    crlf = raw(*BASIC, "Subject: same", body="one\r\ntwo\r\n")
    lf = crlf.replace(b"\r\n", b"\n")
    traced = b"Received: from relay by mx; Mon, 3 Jun 2024 10:00:05 +0000\r\n" + crlf
    digests = {parse_mail(data).content_digest for data in (crlf, lf, traced)}
    assert len(digests) == 1


@pytest.mark.parametrize(
    "changed",
    [
        raw("From: Other <other@example.com>", BASIC[1], "Subject: same", body="one\r\ntwo\r\n"),
        raw(BASIC[0], "Date: Mon, 03 Jun 2024 10:00:01 +0000", "Subject: same", body="one\r\ntwo\r\n"),
        raw(*BASIC, "Subject: other", body="one\r\ntwo\r\n"),
        raw(*BASIC, "Subject: same", body="one\r\nthree\r\n"),
    ],
    ids=["from", "date", "subject", "body"],
)
def test_digest_changes_with_content(changed: bytes) -> None:
    same = raw(*BASIC, "Subject: same", body="one\r\ntwo\r\n")
    assert parse_mail(changed).content_digest != parse_mail(same).content_digest


# --- when the library itself stumbles -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        # mail-parser raises ValueError on a NUL in a charset label when the body has 8-bit bytes.
        b'From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset="\x00bad"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n",
        # ... and TypeError when RFC 2231 sections are mixed with a whole value.
        b'From: a@example.com\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain\r\n\r\ncaf\xc3\xa9\r\n"
        b"--a\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''a.pdf; "
        b"filename*0=b.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n--a--\r\n",
    ],
    ids=["nul-in-charset", "mixed-rfc2231"],
)
def test_mail_parser_failure_falls_back_to_the_stdlib(data: bytes) -> None:
    mail = parse_mail(data)
    assert mail.from_address == Address("", "a@example.com")
    assert mail.body_text.strip() == "café"
    assert any(d.startswith("mail-parser failed") for d in mail.defects)
    assert all("\x00" not in d for d in mail.defects)


def test_unreadable_attachment_name_still_keeps_the_file() -> None:
    data = _with_attachment(
        "Content-Type: application/pdf",
        "Content-Disposition: attachment; filename*=utf-8''a.pdf; filename*0=b.pdf",
        "Content-Transfer-Encoding: base64",
    )
    (attachment,) = parse_mail(data).attachments
    assert (attachment.filename, attachment.data) == ("attachment-1.pdf", b"Hello")


@pytest.mark.parametrize(
    "label", ["undefined", "base64", "zlib", "punycode", "unicode_escape", "utf-32", "x-user-defined"]
)
def test_charset_labels_naming_odd_python_codecs_never_raise(label: str) -> None:
    body = "café \\x41 \\u".encode()
    mail = parse_mail(mime(f'text/plain; charset="{label}"', body, "Content-Transfer-Encoding: 8bit"))
    assert isinstance(mail.body_text, str)


def test_mail_parser_logs_no_header_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        parse_mail(raw(*BASIC, b"Subject: =?utf-8?B?5Zue5aSN7-c6IFVy?= secret"))
    assert not [record for record in caplog.records if record.name.startswith("mailparser")]


def test_huge_header_block_parses_in_linear_time() -> None:
    words = 30_000
    data = raw(
        BASIC[0],
        "Date: Mon, 03 Jun 2024 10:00:00 +0200",
        "Subject: " + " ".join(["=?utf-8?q?ab?="] * words),
        "To: " + ", ".join(f'"x, y" <u{i}@example.com>' for i in range(3_000)),
        "References: " + " ".join(f"<r{i}@example.com>" for i in range(words)),
    )
    # No timing assertion (the machine is shared); pytest-timeout catches a quadratic relapse,
    # which took minutes at this size when the header went through mail-parser.
    mail = parse_mail(data)
    assert mail.subject == "ab" * words
    assert len(mail.to) == 3_000 and mail.to[0] == Address("x, y", "u0@example.com")
    assert len(mail.references) == words
    assert mail.date == datetime(2024, 6, 3, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(("depth", "readable"), [(40, True), (3000, False)])
def test_nested_multiparts(depth: int, readable: bool) -> None:
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    data = f"From: a@example.com\r\nSubject: deep\r\n{opening}Content-Type: text/plain\r\n\r\ninnermost\r\n"
    if readable:
        assert parse_mail(data.encode()).body_text.strip() == "innermost"
    else:
        with pytest.raises(ParseError, match="nesting"):
            parse_mail(data.encode())


@pytest.mark.parametrize(
    "name",
    ["\uff0e\uff0e\uff0fetc\uff0fpasswd", "a\u2215..\u2215passwd", "..\u2044..\u2044passwd", "x\uff3c..\uff3cpasswd"],
)
def test_look_alike_slashes_and_dots_never_make_a_path(name: str) -> None:
    data = _with_attachment(
        "Content-Type: application/octet-stream",
        f'Content-Disposition: attachment; filename="{name}"',
        "Content-Transfer-Encoding: base64",
    )
    (attachment,) = parse_mail(data).attachments
    # Judged as a later conversion (Windows "best fit", NFKC) would see it.
    seen = unicodedata.normalize("NFKC", attachment.filename).translate({0x2215: "/", 0x2044: "/"})
    assert "/" not in seen and "\\" not in seen and ".." not in seen
    assert attachment.filename == "passwd"
