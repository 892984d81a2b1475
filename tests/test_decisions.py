"""What becomes of a message: the threading rule, automatic mail, escalation, as tables."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ticketure_mail.config import load_settings
from ticketure_mail.decisions import Source, ThreadCandidate, decide, dedupe_key
from ticketure_mail.senders import requester_of
from ticketure_mail.deadlines import policy_from_settings
from ticketure_mail.loops import HUMAN, LoopVerdict
from ticketure_mail.model import Address, Outcome, Priority, RequestType
from ticketure_mail.request_types import TypeRules
from ticketure_mail.staff import StaffDirectory
from ticketure_mail.urgency import UrgencyRule

from mailfactory import parsed

SETTINGS = load_settings(Path(__file__).resolve().parents[1] / "config.example.toml")
POLICY = policy_from_settings(SETTINGS)
RULE = UrgencyRule(SETTINGS.urgency.markers, SETTINGS.urgency.negations)
THURSDAY = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def candidate(matched_by="in-reply-to", priority=Priority.NORMAL, participants=("client@example.com",)):
    return ThreadCandidate(7, "TKT-000007", priority, RequestType.STANDARD, "client@example.com",
                           frozenset(participants), matched_by)


def plan_for(mail, cand=None, verdict=HUMAN, followups=False):
    return decide(mail, source=Source("ingest"), received_at=THURSDAY, candidate=cand, verdict=verdict,
                  urgency=RULE, policy=POLICY, acknowledge_followups=followups)


def test_new_standard_request() -> None:
    plan = plan_for(parsed())
    assert plan.outcome == Outcome.CREATED
    assert plan.new_ticket is not None
    assert plan.new_ticket.priority == Priority.NORMAL
    assert plan.new_ticket.request_type == RequestType.STANDARD
    assert plan.new_ticket.due_at == THURSDAY + timedelta(hours=24)
    assert plan.ack == "standard"


def test_new_urgent_request_is_due_in_fifteen_minutes() -> None:
    plan = plan_for(parsed(subject="Urgent: payments fail"))
    assert plan.new_ticket is not None
    assert plan.new_ticket.priority == Priority.URGENT
    assert plan.new_ticket.urgency_marker == "Urgent"
    assert plan.new_ticket.due_at == THURSDAY + timedelta(minutes=15)
    assert plan.ack == "urgent"


@pytest.mark.parametrize(
    ("matched_by", "sender", "joins"),
    [
        ("in-reply-to", "client@example.com", True),
        ("references", "colleague@example.com", True),  # someone in Cc answering the thread
        ("subject-reference", "client@example.com", True),
        ("subject-reference", "CLIENT@example.com", True),
        ("subject-reference", "stranger@example.net", False),  # a guessed reference opens a new ticket
    ],
)
def test_threading_rule(matched_by: str, sender: str, joins: bool) -> None:
    plan = plan_for(parsed(subject="Re: [TKT-000007] Printer", from_addr=sender), candidate(matched_by))
    assert plan.outcome == (Outcome.THREADED if joins else Outcome.CREATED)
    assert (plan.join_ticket is not None) == joins


def test_follow_up_gets_no_acknowledgement_by_default() -> None:
    assert plan_for(parsed(subject="Re: Printer"), candidate()).ack is None
    assert plan_for(parsed(subject="Re: Printer"), candidate(), followups=True).ack == "standard"


def test_urgent_follow_up_escalates_a_normal_ticket() -> None:
    plan = plan_for(parsed(subject="Re: URGENT now: Printer"), candidate())
    assert plan.outcome == Outcome.THREADED
    assert plan.escalation is not None and plan.escalation.due_at == THURSDAY + timedelta(minutes=15)
    assert plan.ack == "escalated"


def test_urgent_follow_up_on_an_urgent_ticket_changes_nothing() -> None:
    plan = plan_for(parsed(subject="Re: Urgent: Printer"), candidate(priority=Priority.URGENT))
    assert plan.escalation is None and plan.ack is None


def test_automatic_reply_joins_its_ticket_as_a_silent_note() -> None:
    verdict = LoopVerdict(True, True, "Auto-Submitted: auto-replied")
    plan = plan_for(parsed(subject="Automatic reply: Urgent: server down"), candidate(), verdict)
    assert plan.outcome == Outcome.THREADED
    assert plan.message_kind == "note"
    assert plan.escalation is None and plan.ack is None and plan.new_ticket is None


def test_automatic_mail_without_ticket_is_discarded_with_reason() -> None:
    verdict = LoopVerdict(True, True, "delivery status notification")
    plan = plan_for(parsed(subject="Undelivered Mail"), None, verdict)
    assert plan.outcome == Outcome.DISCARDED
    assert "delivery status notification" in plan.reason


def test_automatic_mail_never_joins_by_a_bare_subject_reference() -> None:
    verdict = LoopVerdict(True, True, "Auto-Submitted: auto-replied")
    plan = plan_for(parsed(subject="Re: [TKT-000007]"), candidate("subject-reference"), verdict)
    assert plan.outcome == Outcome.DISCARDED


def test_list_mail_opens_a_ticket_without_acknowledgement() -> None:
    plan = plan_for(parsed(), None, LoopVerdict(False, True, "List-Id header (mailing list)"))
    assert plan.outcome == Outcome.CREATED and plan.ack is None
    assert "List-Id" in plan.reason


def test_no_sender_at_all_is_quarantined() -> None:
    plan = plan_for(parsed(from_addr="", from_address=None))
    assert plan.outcome == Outcome.QUARANTINED


def test_requester_falls_back_to_sender_then_return_path() -> None:
    assert requester_of(parsed(from_addr="", sender=Address("S", "s@example.com"))) == Address("S", "s@example.com")
    assert requester_of(parsed(from_addr="", from_address=None, return_path="rp@example.com")) == Address("", "rp@example.com")


def test_dedupe_key_prefers_message_id_and_falls_back_to_content() -> None:
    assert dedupe_key(parsed(message_id="abc@example.com")) == "mid:abc@example.com"
    assert dedupe_key(parsed(message_id=None, content_digest="f" * 64)) == "digest:" + "f" * 64
    long_key = dedupe_key(parsed(message_id="x" * 2000 + "@example.com"))
    assert long_key.startswith("mid-sha256:") and len(long_key) < 100


def test_thread_index_root_is_the_first_22_bytes() -> None:
    from ticketure_mail.decisions import thread_index_root

    original = parsed(headers={"Thread-Index": "AdrBLn8waxwtPk9QYXKDlKW2x9jp+g=="})
    reply = parsed(headers={"Thread-Index": "AdrBLn8waxwtPk9QYXKDlKW2x9jp+gAAChss"})
    assert thread_index_root(original) is not None
    assert thread_index_root(original) == thread_index_root(reply)
    assert thread_index_root(parsed(headers={"Thread-Index": "short=="})) is None
    assert thread_index_root(parsed(headers={"Thread-Index": "!!!not base64!!!"})) is None
    assert thread_index_root(parsed()) is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Scanner driver install fails", "RE: Scanner driver install fails", True),
        ("Scanner  driver", "AW: SV: scanner driver", True),
        ("Scanner driver", "Printer driver", False),
    ],
)
def test_same_conversation_subject(a: str, b: str, same: bool) -> None:
    from ticketure_mail.decisions import same_conversation_subject

    assert same_conversation_subject(a, b) == same


def test_rate_limit_suppresses_the_acknowledgement_but_not_the_ticket() -> None:
    plan = decide(parsed(), source=Source("ingest"), received_at=THURSDAY, candidate=None, verdict=HUMAN,
                  urgency=RULE, policy=POLICY, acknowledge_followups=False, ack_limit="rate limit: 5 in 10 minutes")
    assert plan.outcome == Outcome.CREATED and plan.ack is None
    assert plan.ack_suppressed == "rate limit: 5 in 10 minutes"
    assert "acknowledgement suppressed" in plan.reason


def test_config_may_let_anyone_join_by_subject_reference() -> None:
    plan = decide(parsed(subject="Re: [TKT-000007]", from_addr="stranger@example.net"), source=Source("ingest"),
                  received_at=THURSDAY, candidate=candidate("subject-reference"), verdict=HUMAN, urgency=RULE,
                  policy=POLICY, acknowledge_followups=False, subject_reference_from="anyone")
    assert plan.outcome == Outcome.THREADED


def test_delivery_report_names_the_bounced_acknowledgement() -> None:
    report = parsed(subject="Undelivered", from_addr="MAILER-DAEMON@mx.example.org", is_delivery_report=True,
                    reported_message_ids=("ack-1@ticketure.com",))
    plan = plan_for(report, candidate("delivery-report"), LoopVerdict(True, True, "delivery status notification"))
    assert plan.outcome == Outcome.THREADED and plan.message_kind == "note"
    assert plan.bounced_message_ids == ("ack-1@ticketure.com",)
    assert plan_for(report, None, LoopVerdict(True, True, "dsn")).bounced_message_ids == ("ack-1@ticketure.com",)


# --- staff replies and request types --------------------------------------------------------------

STAFF = StaffDirectory(addresses=("lead@partner.example",), domains=("ticketure.com",))
TYPES = TypeRules.from_settings(SETTINGS)


def staff_plan(mail, cand=None, verdict=HUMAN, followups=False):
    return decide(mail, source=Source("ingest"), received_at=THURSDAY, candidate=cand, verdict=verdict,
                  urgency=RULE, policy=POLICY, acknowledge_followups=followups, type_rules=TYPES, staff=STAFF)


@pytest.mark.parametrize(
    ("sender", "matched_by", "outcome", "kind"),
    [
        # Staff answering by the thread's headers, or by the reference in the subject, though
        # they never took part in the ticket: a response.
        ("agent@ticketure.com", "in-reply-to", Outcome.THREADED, "response"),
        ("agent@eu.ticketure.com", "references", Outcome.THREADED, "response"),
        ("AGENT@Ticketure.com", "subject-reference", Outcome.THREADED, "response"),
        ("lead@partner.example", "subject-reference", Outcome.THREADED, "response"),
        # A look-alike domain is no staff: a stranger's guessed reference opens a new ticket.
        ("agent@notticketure.com", "subject-reference", Outcome.CREATED, "request"),
        # The client's own follow-up stays a follow-up.
        ("client@example.com", "in-reply-to", Outcome.THREADED, "followup"),
    ],
)
def test_staff_reply_rule(sender: str, matched_by: str, outcome: Outcome, kind: str) -> None:
    plan = staff_plan(parsed(subject="Re: [TKT-000007] Printer", from_addr=sender), candidate(matched_by))
    assert (plan.outcome, plan.message_kind) == (outcome, kind)
    if kind == "response":
        assert plan.ack is None and plan.escalation is None
        assert "first response recorded" in plan.reason


def test_staff_reply_is_never_acknowledged_nor_escalates() -> None:
    plan = staff_plan(parsed(subject="Re: URGENT: site down", from_addr="agent@ticketure.com"), candidate(),
                      followups=True)
    assert plan.message_kind == "response" and plan.ack is None and plan.escalation is None


def test_second_staff_reply_says_the_first_response_is_kept() -> None:
    answered = ThreadCandidate(7, "TKT-000007", Priority.NORMAL, RequestType.STANDARD, "client@example.com",
                               frozenset({"client@example.com"}), "in-reply-to", first_response_at=THURSDAY)
    plan = staff_plan(parsed(subject="Re: Printer", from_addr="agent@ticketure.com"), answered)
    assert plan.message_kind == "response" and "already recorded" in plan.reason


def test_automatic_mail_from_staff_is_a_note_not_a_response() -> None:
    plan = staff_plan(parsed(subject="Out of office", from_addr="agent@ticketure.com"), candidate(),
                      LoopVerdict(True, True, "Auto-Submitted: auto-replied"))
    assert plan.message_kind == "note"


def test_new_mail_from_staff_opens_a_ticket_as_anyone_else() -> None:
    plan = staff_plan(parsed(subject="Client called: cart rule broken", from_addr="agent@ticketure.com"))
    assert plan.outcome == Outcome.CREATED and plan.ack == "standard"


@pytest.mark.parametrize(
    ("subject", "body", "request_type", "rule", "due"),
    [
        ("Please change the fonts", "", RequestType.WEB_REFINEMENT, "web-refinement", timedelta(days=3)),
        ("Hi", "We need a webhook for refunds", RequestType.API_REQUEST, "api-request", timedelta(days=3)),
        ("Printer jammed", "", RequestType.STANDARD, None, timedelta(hours=24)),
        # The urgency marker wins over every type rule, and keeps its 15 minutes.
        ("URGENT: the API is down", "", RequestType.URGENT, None, timedelta(minutes=15)),
    ],
)
def test_new_ticket_takes_the_type_rule(subject: str, body: str, request_type: RequestType, rule: str | None,
                                        due: timedelta) -> None:
    plan = staff_plan(parsed(subject=subject, body_text=body))
    assert plan.new_ticket is not None
    assert (plan.new_ticket.request_type, plan.new_ticket.type_rule) == (request_type, rule)
    assert plan.new_ticket.due_at == THURSDAY + due


def test_a_non_participant_joining_by_headers_changes_and_learns_nothing() -> None:
    plan = plan_for(parsed(subject="Re: URGENT", from_addr="stranger@example.net"), candidate(), followups=True)
    assert plan.outcome == Outcome.THREADED
    assert plan.escalation is None and plan.ack is None
    assert plan.from_participant is False
    own = plan_for(parsed(subject="Re: URGENT", from_addr="Client@Example.com"), candidate())
    assert own.escalation is not None and own.from_participant is True


def test_split_attachments_keeps_what_fits_in_message_order() -> None:
    from ticketure_mail.decisions import split_attachments
    from ticketure_mail.model import Attachment

    a, b, c = (Attachment(n, "application/octet-stream", b"x" * size) for n, size in (("a", 60), ("b", 50), ("c", 30)))
    assert split_attachments((a, b, c), 100) == ((a, c), (b,))
    assert split_attachments((a, b, c), 0) == ((), (a, b, c))
    assert split_attachments((a, b, c), 1000) == ((a, b, c), ())


# --- a closed ticket ------------------------------------------------------------------------------

def closed(priority: Priority = Priority.NORMAL, triaged: bool = False, request_type=RequestType.STANDARD):
    return replace(candidate(priority=priority), closed=True, triaged=triaged, request_type=request_type)


@pytest.mark.parametrize(
    ("ticket", "due"),
    [
        (closed(), THURSDAY + timedelta(hours=24)),  # untriaged: the request type's target
        (closed(request_type=RequestType.API_REQUEST), THURSDAY + timedelta(days=3)),
        (closed(Priority.HIGH), THURSDAY + timedelta(hours=1)),  # a priority someone set
        (closed(Priority.NORMAL, triaged=True), THURSDAY + timedelta(days=3)),  # priority 3 decided by staff
        (closed(Priority.URGENT), THURSDAY + timedelta(minutes=15)),
    ],
)
def test_the_client_writing_to_a_closed_ticket_reopens_it_on_its_own_target(ticket: ThreadCandidate,
                                                                             due: datetime) -> None:
    plan = staff_plan(parsed(subject="Re: Printer"), ticket)
    assert plan.outcome == Outcome.THREADED and plan.message_kind == "followup"
    assert plan.reopening is not None
    assert (plan.reopening.by, plan.reopening.due_at) == ("client@example.com", due)
    assert plan.reason.startswith("reopened")
    assert plan.ack is None  # a follow-up, acknowledged only with acknowledge_followups


def test_an_urgent_word_both_reopens_and_escalates() -> None:
    plan = staff_plan(parsed(subject="Re: URGENT again: Printer"), closed())
    assert plan.reopening is not None and plan.escalation is not None
    assert plan.escalation.due_at == THURSDAY + timedelta(minutes=15)
    assert plan.ack == "escalated" and "reopened" in plan.reason and "escalated" in plan.reason


@pytest.mark.parametrize(
    ("sender", "verdict"),
    [
        ("agent@ticketure.com", HUMAN),  # staff adding a word after closing
        ("someone@elsewhere.example", HUMAN),  # not part of the ticket
        ("client@example.com", LoopVerdict(True, True, "Auto-Submitted: auto-replied")),  # a robot
    ],
)
def test_others_leave_a_closed_ticket_closed(sender: str, verdict: LoopVerdict) -> None:
    plan = staff_plan(parsed(subject="Re: Printer", from_addr=sender), closed(), verdict)
    assert plan.outcome == Outcome.THREADED and plan.reopening is None
