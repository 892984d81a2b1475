"""Triage, report and explain through the command line, in process with a frozen clock, on SQLite
and PostgreSQL: what staff type, what they see, what is stored."""

import getpass
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from servers import ImapAccount, SmtpSink

from dbreset import empty_database
from ticketure_mail.cli import main
from ticketure_mail.clock import FrozenClock
from ticketure_mail.store import Store

from appfactory import config_table, toml_text
from mailfactory import raw_message

ARRIVAL = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # Thursday, Europe/London, whole days
NOW = ARRIVAL + timedelta(hours=1)

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def config(mailbox: ImapAccount, sink: SmtpSink, db_url: str, tmp_path: Path) -> Path:
    store = Store.from_url(db_url, "TKT")
    # PostgreSQL is shared by the session: every test starts from empty tables.
    empty_database(store.engine)
    store.close()
    path = tmp_path / "config.toml"
    table = config_table(mailbox, sink, db_url, tmp_path / "pw", staff={"domains": ["staff.example"]})
    path.write_text(toml_text(table), encoding="utf-8")
    return path


@pytest.fixture
def run(config: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    def run_cli(*args: str, at: datetime = NOW) -> tuple[int, str]:
        status = main(["--log-level", "WARNING", "--config", str(config), *args], clock=FrozenClock(at))
        return status, capsys.readouterr().out

    return run_cli


def ingest(run: Run, tmp_path: Path, name: str, at: datetime = ARRIVAL, **mail: str) -> dict:
    path = tmp_path / f"{name}.eml"
    path.write_bytes(raw_message(message_id=f"<{name}@example.com>", **mail))
    status, out = run("ingest", "--json", "--received-at", at.isoformat(), str(path), at=at)
    assert status == 0
    return json.loads(out)


def show(run: Run, reference: str) -> dict:
    status, out = run("tickets", "show", reference, "--json")
    assert status == 0
    return json.loads(out)


def listed(run: Run, *filters: str, at: datetime = NOW) -> list[str]:
    status, out = run("tickets", "list", "--json", *filters, at=at)
    assert status == 0
    return [t["reference"] for t in json.loads(out)]


def test_set_priority_recounts_from_the_arrival_and_records_who_and_when(run: Run, tmp_path: Path) -> None:
    created = ingest(run, tmp_path, "t1", subject="Checkout slow")
    assert created["due_at"] == "2026-12-04T15:00:00Z"  # standard support: 24 business hours

    status, out = run("tickets", "set-priority", "TKT-000001", "2", "--by", "Lee")
    assert status == 0 and out.startswith("TKT-000001: priority 2, due Thursday 3 December 2026, 16:00 GMT")
    ticket = show(run, "TKT-1")
    assert ticket["priority"] == 2 and ticket["due_at"] == "2026-12-03T16:00:00Z"  # 1 hour from the arrival
    assert (ticket["priority_set_by"], ticket["priority_set_at"]) == ("Lee", NOW.isoformat().replace("+00:00", "Z"))
    [event] = ticket["history"]
    assert event["action"] == "set-priority" and event["by"] == "Lee"
    assert "priority 3 -> 2" in event["detail"] and "2026-12-04T15:00:00Z -> 2026-12-03T16:00:00Z" in event["detail"]

    # Staff choosing priority 3 by hand: the priority's 3 days now, no longer standard support's 24 hours.
    later = NOW + timedelta(minutes=5)
    status, out = run("tickets", "set-priority", "TKT-000001", "3", at=later)
    assert status == 0
    ticket = show(run, "TKT-000001")
    assert ticket["due_at"] == "2026-12-06T15:00:00Z"
    assert ticket["priority_set_by"] == getpass.getuser()  # the operating-system user by default
    # The same again changes nothing.
    status, out = run("tickets", "set-priority", "TKT-000001", "3", at=later)
    assert status == 0 and out.rstrip().endswith("(unchanged)")
    assert len(show(run, "TKT-000001")["history"]) == 2


def test_set_type_moves_the_deadline_only_while_the_type_decides_it(run: Run, tmp_path: Path) -> None:
    ingest(run, tmp_path, "t2", subject="Please look at this")
    ingest(run, tmp_path, "t3", subject="And this")
    status, out = run("tickets", "set-type", "TKT-000001", "web_refinement", "--by", "Lee")
    assert status == 0
    ticket = show(run, "TKT-000001")
    # Untriaged: web refinement's target (3 days around the clock) replaces standard support's.
    assert (ticket["request_type"], ticket["due_at"], ticket["type_rule"]) == (
        "web_refinement", "2026-12-06T15:00:00Z", None)
    assert "type standard -> web_refinement" in ticket["history"][0]["detail"]

    run("tickets", "set-priority", "TKT-000002", "4")
    before = show(run, "TKT-000002")["due_at"]
    run("tickets", "set-type", "TKT-000002", "api_request")
    after = show(run, "TKT-000002")
    assert after["request_type"] == "api_request" and after["due_at"] == before  # priority 4 decides now

    assert pytest.raises(SystemExit, run, "tickets", "set-type", "TKT-000002", "urgent").value.code == 2


def test_respond_close_and_the_list_filters(run: Run, tmp_path: Path) -> None:
    ingest(run, tmp_path, "a", subject="Need an API key")  # TKT-1, api_request, due in 3 days
    ingest(run, tmp_path, "b", subject="Cart rule change")  # TKT-2, standard, due Friday 15:00
    ingest(run, tmp_path, "c", subject="URGENT: site down")  # TKT-3, priority 1, due 15:15
    ingest(run, tmp_path, "d", subject="Typo on the home page")  # TKT-4, web_refinement

    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert listed(run, "--overdue", at=saturday) == ["TKT-000002", "TKT-000003"]
    assert listed(run, "--priority", "1") == ["TKT-000003"]
    assert listed(run, "--type", "api_request") == ["TKT-000001"]
    assert listed(run, "--type", "web_refinement", "--status", "open") == ["TKT-000004"]

    status, out = run("tickets", "respond", "TKT-000003", "--by", "Lee", "--at", "2026-12-03T15:10:00Z")
    assert status == 0 and "first response" in out
    ticket = show(run, "TKT-000003")
    assert (ticket["first_response_at"], ticket["first_response_by"]) == ("2026-12-03T15:10:00Z", "Lee")
    status, out = run("tickets", "respond", "TKT-000003", "--by", "Kim")
    assert out.rstrip().endswith("(unchanged)") and show(run, "TKT-000003")["first_response_by"] == "Lee"

    status, _ = run("tickets", "close", "TKT-000002", "--by", "Lee")
    assert status == 0
    assert show(run, "TKT-000002")["status"] == "closed"
    assert listed(run, "--overdue", at=saturday) == []
    assert listed(run, "--status", "closed") == ["TKT-000002"]
    assert listed(run, "--status", "open", "--priority", "3") == ["TKT-000001", "TKT-000004"]

    status, out = run("tickets", "list", at=saturday)
    assert "TKT-000003  P1  urgent" in out and "answered" in out and "stopped" in out
    status, text = run("tickets", "show", "TKT-000002")
    assert "close by Lee: closed without a first response" in text

    assert run("tickets", "respond", "TKT-000099")[0] == 1
    # A response before the request is a typing mistake: refused, nothing written.
    assert run("tickets", "respond", "TKT-000001", "--at", "2026-12-01T09:00:00Z")[0] == 2
    assert show(run, "TKT-000001")["first_response_at"] is None
    assert run("tickets", "close", "TKT-000099")[0] == 1


def test_the_client_writing_again_reopens_a_closed_ticket_on_a_new_response_clock(run: Run, tmp_path: Path) -> None:
    ingest(run, tmp_path, "r1", subject="Cart rule change")  # TKT-1, standard, due Friday 15:00
    assert run("tickets", "respond", "TKT-000001", "--by", "Lee", "--at", "2026-12-03T15:30:00Z")[0] == 0
    assert run("tickets", "close", "TKT-000001", "--by", "Lee")[0] == 0

    # Staff adding a word after closing, and a stranger who quotes the thread, leave it closed.
    monday = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    staff = ingest(run, tmp_path, "r2", at=monday, subject="Re: Cart rule change", sender="Lee <lee@staff.example>",
                   headers={"In-Reply-To": "<r1@example.com>"})
    stranger = ingest(run, tmp_path, "r3", at=monday, subject="Re: Cart rule change",
                      sender="Someone <someone@elsewhere.example>", headers={"In-Reply-To": "<r1@example.com>"})
    assert (staff["ticket"], stranger["ticket"]) == ("TKT-000001", "TKT-000001")
    assert show(run, "TKT-000001")["status"] == "closed"

    # The client writing again: the ticket is open once more and owes a response, counted from
    # this message as a new one of its kind would be (24 business hours: Tuesday 10:00).
    again = ingest(run, tmp_path, "r4", at=monday, subject="Re: [TKT-000001] Cart rule change",
                   headers={"In-Reply-To": "<r1@example.com>"})
    assert again["outcome"] == "threaded" and again["ticket"] == "TKT-000001"
    assert "reopened" in again["reason"]
    ticket = show(run, "TKT-000001")
    assert (ticket["status"], ticket["closed_at"]) == ("open", None)
    assert ticket["due_at"] == "2026-12-08T10:00:00Z"
    assert (ticket["first_response_at"], ticket["first_response_by"]) == (None, None)
    reopen = ticket["history"][-1]
    assert (reopen["action"], reopen["by"]) == ("reopen", "client@example.com")
    # The response that was given before is not forgotten.
    assert "2026-12-03T15:30:00Z by Lee" in reopen["detail"]
    assert listed(run, "--overdue", at=monday + timedelta(days=2)) == ["TKT-000001"]

    # The same message fetched again changes nothing.
    path = tmp_path / "r4.eml"
    status, out = run("ingest", "--json", "--received-at", monday.isoformat(), str(path), at=monday)
    assert json.loads(out)["outcome"] == "duplicate"
    assert [e["action"] for e in show(run, "TKT-000001")["history"]] == ["respond", "close", "reopen"]


def test_report_counts_met_and_missed_targets_with_median_and_p90(run: Run, tmp_path: Path) -> None:
    # Four priority 1 tickets answered after 5, 10, 20 and 40 minutes (target 15): two met.
    for n, minutes in enumerate((5, 10, 20, 40), start=1):
        ingest(run, tmp_path, f"u{n}", subject=f"URGENT: outage {n}")
        run("tickets", "respond", f"TKT-{n}", "--by", "Lee", "--at", (ARRIVAL + timedelta(minutes=minutes)).isoformat())
    ingest(run, tmp_path, "s1", subject="Kibana question")  # TKT-5, standard, unanswered, due Friday 15:00
    ingest(run, tmp_path, "old", subject="Old one", at=ARRIVAL - timedelta(days=30))  # outside --since

    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    status, out = run("report", "--since", "2026-12-01", "--json", at=saturday)
    assert status == 0
    data = json.loads(out)
    p1 = data["by_priority"][0]
    assert (p1["group"], p1["tickets"], p1["responded"], p1["met_target"], p1["missed_target"]) == (
        "P1 Urgent", 4, 4, 2, 2)
    assert (p1["median_response_minutes"], p1["p90_response_minutes"]) == (15.0, 40.0)
    standard = next(g for g in data["by_type"] if g["group"] == "standard")
    assert (standard["tickets"], standard["responded"], standard["overdue_now"], standard["missed_target"]) == (
        1, 0, 1, 1)
    assert data["total"]["tickets"] == 5 and data["since"] == "2026-12-01T00:00:00Z"

    status, text = run("report", "--since", "2026-12-01", at=saturday)
    lines = text.splitlines()
    assert lines[0].startswith("First responses, received since Tuesday 1 December 2026, 00:00 GMT")
    assert any(line.split()[:6] == ["P1", "Urgent", "4", "4", "2", "(50%)"] for line in lines)
    assert any(line.startswith("all") and line.split()[-1] == "1" for line in lines)
    with pytest.raises(SystemExit) as refused:  # a usage error, as argparse reports them
        run("report", "--since", "last week")
    assert refused.value.code == 2


def test_explain_tells_what_would_happen_and_stores_nothing(
    run: Run, tmp_path: Path, sink: SmtpSink
) -> None:
    first = ingest(run, tmp_path, "e1", subject="Kibana report is empty", sender="Di <di@example.com>")
    message = tmp_path / "new.eml"
    message.write_bytes(raw_message(subject="Please add a webhook", sender="Ed <ed@example.com>",
                                    message_id="<explain-1@example.com>"))
    status, out = run("explain", "--json", "--received-at", "2026-12-04T19:00:00Z", str(message))
    assert status == 0
    found = json.loads(out)
    assert (found["outcome"], found["type_rule"], found["type_word"], found["type_where"]) == (
        "created", "api-request", "webhook", "subject")
    assert (found["priority"], found["request_type"], found["due_at"]) == (3, "api_request", "2026-12-07T19:00:00Z")
    assert found["clock"] == "3 days, around the clock"
    assert found["ack"] and found["ack_template"] == "api_request" and found["ack_recipient"] == "ed@example.com"
    assert "the API endpoints involved" in found["ack_text"]

    reply = tmp_path / "reply.eml"
    reply.write_bytes(raw_message(subject="Re: Kibana report is empty", sender="di@example.com",
                                  message_id="<explain-2@example.com>", headers={"In-Reply-To": "<e1@example.com>"}))
    status, text = run("explain", str(reply))
    assert f"threading: joins {first['ticket']} (matched by in-reply-to)" in text
    assert "ack:       none: a follow-up is not acknowledged" in text

    robot = tmp_path / "robot.eml"
    robot.write_bytes(raw_message(subject="Automatic reply: Kibana", sender="di@example.com",
                                  message_id="<explain-3@example.com>", headers={"Auto-Submitted": "auto-replied"}))
    status, text = run("explain", str(robot))
    assert "loop rule: automatic mail (Auto-Submitted: auto-replied)" in text

    staff = tmp_path / "staff.eml"
    staff.write_bytes(raw_message(subject=f"[{first['ticket']}] looking into it", sender="agent@staff.example",
                                  message_id="<explain-4@staff.example>"))
    status, text = run("explain", str(staff))
    assert "staff:     agent@staff.example is staff" in text
    assert "first response recorded" in text and "a reply from staff is never acknowledged" in text

    urgent = tmp_path / "urgent.eml"
    urgent.write_bytes(raw_message(subject="=?utf-8?q?URGENT=3A_caf=C3=A9_site_down?=", sender="fi@example.com",
                                   message_id="<explain-5@example.com>"))
    status, text = run("explain", "--received-at", "2026-12-05T23:50:00Z", str(urgent))
    assert "subject:   URGENT: café site down" in text
    assert "urgency:   marker 'URGENT' in the subject -> priority 1" in text
    assert "deadline:  Sunday 6 December 2026, 00:05 GMT" in text and "15 minutes, around the clock" in text
    assert "--- acknowledgement ---" in text and "844-830-9595" in text

    status, out = run("explain", "--json", str(tmp_path / "e1.eml"))
    assert json.loads(out)["outcome"] == "duplicate"

    # Nothing of the above was stored or queued.
    assert listed(run) == [first["ticket"]]
    status, out = run("outbox", "list", "--json")
    assert len(json.loads(out)) == 1  # the first ticket's acknowledgement only
    assert sink.messages == []


def test_help_lists_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tickets", "--help"])
    out = capsys.readouterr().out
    for action in ("set-priority", "set-type", "respond", "close"):
        assert action in out
    with pytest.raises(SystemExit):
        main(["tickets", "list", "--help"])
    out = capsys.readouterr().out
    for option in ("--overdue", "--priority", "--type", "--status"):
        assert option in out
