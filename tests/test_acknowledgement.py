"""The acknowledgement: facts, headers, and that nothing from the inbound mail can add a header."""

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from ticketure_mail.acknowledgement import (
    TicketFacts,
    ack_subject,
    build_acknowledgement,
    format_due,
    load_templates,

    template_name,
)
from ticketure_mail.config import load_settings, settings_from_dict
from ticketure_mail.model import Address, Priority, RequestType

from mailfactory import parsed

SETTINGS = load_settings(Path(__file__).resolve().parents[1] / "config.example.toml")
TEMPLATES = load_templates()
NOW = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)


def build(kind="standard", subject="Printer jammed", priority=Priority.NORMAL, name="Casey Client",
          address="client@example.com", mail=None):
    facts = TicketFacts("TKT-000042", subject, priority,
                        RequestType.URGENT if priority == Priority.URGENT else RequestType.STANDARD,
                        datetime(2026, 12, 4, 16, 0, tzinfo=UTC))
    mail = mail or parsed(subject=subject, message_id="orig-1@example.com", references=("root@example.com",))
    out = build_acknowledgement(kind, facts, mail, Address(name, address), SETTINGS, TEMPLATES,
                                "ack-1@ticketure.com", NOW)
    return out, message_from_bytes(out.data, policy=default)


def text_of(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def test_standard_acknowledgement_carries_every_fact() -> None:
    out, msg = build()
    assert out.recipient == "client@example.com"
    assert out.envelope_sender == ""
    assert msg["Subject"] == "[TKT-000042] Printer jammed"
    assert msg["To"] == "Casey Client <client@example.com>"
    assert msg["From"] == "Ticketure Support <support@ticketure.com>"
    assert msg["Message-ID"] == "<ack-1@ticketure.com>"
    assert msg["In-Reply-To"] == "<orig-1@example.com>"
    assert msg["References"] == "<root@example.com> <orig-1@example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Loop"] == "support@ticketure.com"
    body = text_of(msg)
    assert "TKT-000042" in body
    assert "Friday 4 December 2026, 16:00 UTC (UTC)" in body
    assert "844-830-9595" in body and "+44 0800 031 8902" in body
    assert '"Urgent", "Urgent-Priority" or "Urgent Priority"' in body
    assert "15 minutes" in body
    assert "fastest way" in body


def test_urgent_acknowledgement_does_not_teach_the_marker_again() -> None:
    _, msg = build(kind="urgent", subject="Urgent: site down", priority=Priority.URGENT)
    body = text_of(msg)
    assert "1 (Urgent)" in body
    assert "844-830-9595" in body and "+44 0800 031 8902" in body
    assert "Is a future request urgent" not in body


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: [TKT-000042] Printer", "[TKT-000042] Printer"),
        ("AW: Printer", "[TKT-000042] Printer"),
        ("", "[TKT-000042] (no subject)"),
        ("Urgent: refund\r\nBcc: list@example.org", "[TKT-000042] Urgent: refund Bcc: list@example.org"),
    ],
)
def test_ack_subject(subject: str, expected: str) -> None:
    assert ack_subject("TKT-000042", subject, "TKT") == expected


def test_hostile_subject_and_name_cannot_add_headers() -> None:
    out, msg = build(subject="Urgent: refund\r\nBcc: list@example.org\r\n", name="Eve\r\nBcc: x@example.org")
    assert msg.get_all("Bcc") is None
    assert len(msg.get_all("Subject")) == 1
    assert out.data.count(b"\r\nBcc:") == 0
    assert out.recipient == "client@example.com"


def test_non_ascii_display_name_is_encoded_for_a_relay_without_smtputf8() -> None:
    out, msg = build(name="Zoé Lefèvre")
    assert out.data.isascii()
    assert msg["To"] == "Zoé Lefèvre <client@example.com>"


def test_very_long_display_name_is_cut() -> None:
    out, msg = build(name="A" * 5000)
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
    assert len(msg["To"].addresses[0].display_name) <= 78


def test_reply_to_wins_over_from() -> None:
    from ticketure_mail.senders import answer_address

    mail = parsed(reply_to=(Address("Desk", "desk@example.com"),))
    assert answer_address(mail) == Address("Desk", "desk@example.com")
    assert answer_address(parsed()) == Address("Casey Client", "client@example.com")
    assert answer_address(parsed(from_addr="", sender=Address("S", "s@example.com"))) == Address("S", "s@example.com")


def test_format_due_names_the_zone() -> None:
    from zoneinfo import ZoneInfo

    assert format_due(datetime(2026, 7, 1, 12, 0, tzinfo=UTC), ZoneInfo("Europe/London")) == (
        "Wednesday 1 July 2026, 13:00 BST (Europe/London)")


def test_subject_stays_on_the_subject_line_and_is_capped() -> None:
    out, msg = build(subject="[Urgent-Priority] Our homepage shows someone else's content")
    assert b"\r\nSubject: [TKT-000042] [Urgent-Priority] Our homepage shows someone else's content\r\n" in out.data
    out, msg = build(subject="word " * 400)
    assert len(msg["Subject"]) < 220 and msg["Subject"].endswith("…")


# --- one text per request type ------------------------------------------------------------------


def typed(request_type: RequestType, settings=SETTINGS, templates=TEMPLATES) -> str:
    facts = TicketFacts("TKT-000042", "Subject", Priority.NORMAL, request_type, datetime(2026, 12, 4, 16, 0, tzinfo=UTC))
    out = build_acknowledgement("standard", facts, parsed(message_id="o@example.com"), Address("Casey", "c@example.com"),
                                settings, templates, "ack-2@ticketure.com", NOW)
    return text_of(message_from_bytes(out.data, policy=default))


def test_api_request_acknowledgement_asks_for_the_five_things() -> None:
    body = typed(RequestType.API_REQUEST)
    for item in ("goal of the integration, or the use case", "API endpoints involved", "sample requests or payloads",
                 "error messages or logs", "relevant technical documentation"):
        assert item in body
    assert "can take longer" in body and "844-830-9595" in body


def test_web_refinement_and_product_feedback_say_what_happens_next() -> None:
    web = " ".join(typed(RequestType.WEB_REFINEMENT).split())
    assert "queue it for our web team according to its business impact" in web
    assert "does not start straight away" in web and "tell you when to expect it" in web
    feedback = " ".join(typed(RequestType.PRODUCT_FEEDBACK).split())
    assert "product and development teams review" in feedback
    assert "cannot promise immediate work" in feedback


def test_standard_acknowledgement_names_its_business_clock() -> None:
    assert "(our target for a first response: 24 hours of business time (Monday to Friday, all day, UTC time))" in (
        typed(RequestType.STANDARD))
    london = settings_from_dict({
        "imap": {"host": "h", "username": "u", "password_env": "X"}, "smtp": {"host": "h"},
        "calendar": {"timezone": "Europe/London", "holiday_country": "GB",
                     "opening_hours": {d: ["09:00", "17:30"] for d in ("mon", "tue", "wed", "thu", "fri")}},
    })
    assert "24 hours of business time (Monday to Friday, 09:00-17:30, Europe/London time, except holidays)" in (
        typed(RequestType.STANDARD, london, load_templates(london)))


def test_templates_come_from_the_files_the_config_names(tmp_path: Path) -> None:
    (tmp_path / "api.txt").write_text("Dear $greeting_name, $reference is due $due. Costs: $$0.\n", encoding="utf-8")
    settings = settings_from_dict({
        "imap": {"host": "h", "username": "u", "password_env": "X"}, "smtp": {"host": "h"},
        "templates": {"api_request": str(tmp_path / "api.txt")},
    })
    templates = load_templates(settings)
    assert typed(RequestType.API_REQUEST, settings, templates).strip() == (
        "Dear Casey, TKT-000042 is due Friday 4 December 2026, 16:00 UTC (UTC). Costs: $0.")
    # The others stay built in.
    assert "web team" in typed(RequestType.WEB_REFINEMENT, settings, templates)


def test_template_name_by_kind_and_type() -> None:
    assert template_name("standard", RequestType.API_REQUEST) == "api_request"
    assert template_name("standard", RequestType.URGENT) == "standard"
    assert template_name("urgent", RequestType.URGENT) == "urgent"
    assert template_name("escalated", RequestType.WEB_REFINEMENT) == "escalated"


def test_a_quoted_local_part_names_the_same_mailbox_in_to_and_envelope() -> None:
    out, msg = build(address='"john smith"@example.com')
    assert out.recipient == '"john smith"@example.com'
    assert msg["To"].addresses[0].addr_spec == '"john smith"@example.com'
    out, msg = build(address='"john.smith"@example.com')
    assert msg["To"].addresses[0].addr_spec in ('"john.smith"@example.com', "john.smith@example.com")
