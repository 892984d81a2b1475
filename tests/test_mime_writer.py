"""The message writer: what it writes reads back, through the standard parser, as what was meant."""

from email import message_from_bytes, message_from_string
from email.policy import SMTPUTF8, default

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketure_mail import mime_writer


def read(data: bytes, policy=default):
    return message_from_bytes(data, policy=policy)


def content(msg) -> str:
    """The decoded body; the parser keeps the CRLF line ends of the wire format."""
    return msg.get_content().replace("\r\n", "\n")


def write(subject: str = "Hello", name: str = "Casey Client", address: str = "client@example.com",
          body: str = "Body\n", utf8: bool = False) -> bytes:
    return mime_writer.render(
        [("To", mime_writer.address(name, address, utf8)), ("Subject", mime_writer.unstructured(subject, "Subject", utf8))],
        body, utf8)


def test_plain_message_reads_back() -> None:
    msg = read(write())
    assert msg["To"] == "Casey Client <client@example.com>"
    assert msg["Subject"] == "Hello"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(msg) == "Body\n"


def test_non_ascii_name_and_long_subject_are_encoded_words_in_short_lines() -> None:
    subject = "Zoé écrit: l'impression des étiquettes échoue " * 5
    data = write(subject=subject, name="Zoé Lefèvre")
    assert data.isascii()
    head = data.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    msg = read(data)
    assert msg["Subject"] == subject.strip()
    assert msg["To"].addresses[0].display_name == "Zoé Lefèvre"


def test_utf8_message_keeps_raw_utf8_headers() -> None:
    data = write(subject="Grüße", name="Jürgen", address="jürgen@bücher.example", utf8=True)
    assert "Grüße".encode() in data and "jürgen@bücher.example".encode() in data
    msg = message_from_string(data.decode("utf-8"), policy=SMTPUTF8)  # the bytes parser reads headers as ASCII
    assert msg["Subject"] == "Grüße"
    assert msg["To"].addresses[0].addr_spec == "jürgen@bücher.example"


def test_non_ascii_address_without_utf8_is_refused() -> None:
    with pytest.raises(ValueError):
        mime_writer.address("", "jürgen@example.com", utf8=False)


@pytest.mark.parametrize("address", ["a@b\r\nBcc: x@example.org", "no-at-sign", "a@b c", "a@\x00b", "a@"])
def test_an_address_no_header_can_carry_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        mime_writer.address("Name", address, utf8=False)


def test_a_local_part_with_specials_is_quoted_not_split_into_two_addresses() -> None:
    msg = read(write(address="a@b>,<c@example.org"))
    assert len(msg["To"].addresses) == 1
    assert msg["To"].addresses[0].domain == "example.org"


def test_quoted_local_part_is_kept_as_written() -> None:
    assert mime_writer.address("", '"john smith"@example.com', utf8=False) == '"john smith"@example.com'


def test_names_with_specials_are_quoted() -> None:
    msg = read(write(name='Smith, John "JJ" (Acme)'))
    assert msg["To"].addresses[0].display_name == 'Smith, John "JJ" (Acme)'
    assert msg["To"].addresses[0].addr_spec == "client@example.com"


def test_message_id_list_drops_ids_that_could_break_the_header_and_folds_long_lists() -> None:
    assert mime_writer.message_id_list(["a@x", "b c@x", "d>e@x", "é@x", "f@x"]) == "<a@x> <f@x>"
    many = [f"{n:040d}@example.com" for n in range(10)]
    folded = mime_writer.message_id_list(many)
    assert all(len(line) < 998 for line in folded.split("\r\n"))
    msg = read(mime_writer.render([("References", folded)], "x"))
    assert msg["References"].split() == [f"<{i}>" for i in many]


def test_a_header_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        mime_writer.render([("Subject", "a\r\nBcc: x@example.org")], "body")


def test_body_round_trips_exactly_in_lines_of_at_most_76() -> None:
    body = "x" * 300 + "\ntrailing space \nequals = sign\n\ttab\n.\nFrom here\nnon-ASCII: é ✓\n"
    data = write(body=body)
    assert max(len(line) for line in data.split(b"\r\n\r\n", 1)[1].split(b"\r\n")) <= 76
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert content(read(data)) == body


@settings(max_examples=300, deadline=None)
@given(subject=st.text(), name=st.text(), body=st.text())
def test_whatever_the_text_the_message_has_exactly_our_headers(subject: str, name: str, body: str) -> None:
    data = write(subject=subject, name=name, body=body)
    msg = read(data)
    # A header whose value would be empty is left out, never written twice or split in two.
    ours = ["To", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"] + (["Subject"] if mime_writer.one_line(subject) else [])
    assert sorted(msg.keys()) == sorted(ours)
    assert msg["Subject"] == (mime_writer.one_line(subject) or None)
    assert msg["To"].addresses[0].addr_spec == "client@example.com"
    expected = body.replace("\r\n", "\n").replace("\r", "\n")
    assert content(msg) == (expected if expected.endswith("\n") else expected + "\n")
