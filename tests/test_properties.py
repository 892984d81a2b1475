"""Generated input: whatever bytes arrive, processing ends in one outcome and the message is accounted
for; whatever a client writes, the acknowledgement has exactly the headers we put there."""

from __future__ import annotations

import base64
import tempfile
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticketure_mail.acknowledgement import TicketFacts, build_acknowledgement, load_templates
from ticketure_mail.app import App, build_app
from ticketure_mail.clock import FrozenClock
from ticketure_mail.config import load_settings, settings_from_dict
from ticketure_mail.decisions import Source
from ticketure_mail.model import Address, Outcome, Priority, RequestType
from ticketure_mail.parsing import parse_mail
from ticketure_mail.decisions import dedupe_key

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
CHARSETS = ["utf-8", "iso-8859-1", "koi8-r", "shift_jis", "iso-2022-jp", "gb2312", "x-unknown", "utf-7", ""]

header_text = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.builds(lambda cs, enc, payload: f"=?{cs}?{enc}?{payload}?=", st.sampled_from(CHARSETS),
              st.sampled_from(["Q", "B", "q", "b", "X"]), st.text(alphabet="=ABCabc123_?+/ \r\n\t", max_size=40)),
    st.sampled_from(["Urgent: site down", "Re: [TKT-000001] x", "<>", "", "undisclosed-recipients:;",
                     '"a, b" <a@example.com>', "a@", "@b", "\x00\x00", "=?utf-8?q?=0D=0ABcc:_x@example.com?="]),
)
header_names = st.sampled_from([
    "From", "To", "Cc", "Reply-To", "Sender", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
    "Return-Path", "Auto-Submitted", "Precedence", "List-Id", "Content-Type", "Content-Transfer-Encoding",
    "Content-Disposition", "MIME-Version", "X-Loop", "Thread-Index",
])


@st.composite
def part(draw: st.DrawFn, depth: int = 0) -> bytes:
    if depth < 2 and draw(st.booleans()):
        boundary = draw(st.text(alphabet="abcXYZ0123-_=", min_size=1, max_size=12))
        children = draw(st.lists(part(depth + 1), max_size=3))
        kind = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "report; report-type=delivery-status"]))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + c + b"\r\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\r\n"
        return f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\n'.encode() + body
    ctype = draw(st.sampled_from(["text/plain", "text/html", "application/pdf", "message/rfc822", "text/calendar",
                                  "application/ms-tnef", "image/png"]))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", ""]))
    payload = draw(st.binary(max_size=300))
    if cte == "base64" and draw(st.booleans()):
        payload = base64.b64encode(payload)
    name = draw(st.sampled_from(["", "../../etc/passwd", "C:\\evil.exe", "a\x01b.txt", "=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="]))
    head = f"Content-Type: {ctype}; charset={charset}\r\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\r\n"
    if name:
        head += f'Content-Disposition: attachment; filename="{name}"\r\n'
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + payload


@st.composite
def message(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(header_names, header_text), max_size=12))
    lines = [f"{name}: {value}".encode("utf-8", "surrogateescape") for name, value in headers]
    raw = b"\r\n".join(lines) + b"\r\n" + draw(part())
    noise = draw(st.lists(st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=4)), max_size=3))
    for position, junk in noise:
        at = position % (len(raw) + 1)
        raw = raw[:at] + junk + raw[at:]
    return raw


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    # One database for every example: messages from earlier examples make later ones threads
    # and duplicates, which is the point.
    with tempfile.TemporaryDirectory() as folder:
        application = build_app(settings_from_dict({
            "support": {"address": "support@ticketure.test"},
            "imap": {"host": "127.0.0.1", "username": "u", "password_env": "UNUSED"},
            "smtp": {"host": "127.0.0.1", "from_address": "support@ticketure.test"},
            "database": {"url": f"sqlite:///{Path(folder) / 'p.sqlite3'}"},
        }, "<property>"), FrozenClock(NOW))
        yield application
        application.close()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raws=st.lists(message(), min_size=1, max_size=3))
def test_any_input_ends_in_one_outcome_and_is_accounted_for(app: App, raws: list[bytes]) -> None:
    for raw in raws:
        held_before = len(app.store.held_quarantine())
        result = app.processor.process(raw, Source("ingest"), NOW)
        assert result.outcome in set(Outcome)
        if result.outcome == Outcome.QUARANTINED:
            assert len(app.store.held_quarantine()) == held_before + 1
        else:
            assert app.store.is_processed(dedupe_key(parse_mail(raw)))
        if result.outcome in (Outcome.CREATED, Outcome.THREADED):
            assert result.ticket is not None and app.store.ticket(result.ticket) is not None


SETTINGS = load_settings(Path(__file__).resolve().parents[1] / "config.example.toml")
TEMPLATES = load_templates()


@settings(max_examples=300, deadline=None)
@given(subject=st.text(max_size=300), name=st.text(max_size=300))
def test_nothing_a_client_writes_adds_a_header_to_the_acknowledgement(subject: str, name: str) -> None:
    mail = parse_mail(b"From: c@example.com\r\nMessage-ID: <p@example.com>\r\n\r\nhello\r\n")
    facts = TicketFacts("TKT-000001", subject, Priority.NORMAL, RequestType.STANDARD, NOW)
    out = build_acknowledgement("standard", facts, mail, Address(name, "c@example.com"), SETTINGS, TEMPLATES,
                                "ack@ticketure.com", NOW)
    msg = message_from_bytes(out.data, policy=default)
    names = [key.lower() for key in msg.keys()]
    assert sorted(names) == sorted([
        "from", "to", "subject", "date", "message-id", "in-reply-to", "references", "auto-submitted",
        "x-auto-response-suppress", "x-loop", "x-ticketure-loop", "content-type", "content-transfer-encoding",
        "mime-version",
    ])
    assert [a.addr_spec for a in msg["To"].addresses] == ["c@example.com"]
    assert out.recipient == "c@example.com"
    assert all(len(line) <= 998 for line in out.data.split(b"\r\n"))
