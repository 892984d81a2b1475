"""The command line, run as a user runs it: a config file, a subprocess, real servers."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ImapAccount, SmtpSink

from appfactory import config_table, toml_text
from mailfactory import raw_message, slow_to_parse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path) -> Path:
    table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 'cli.sqlite3'}", tmp_path / "pw",
                         schedule={"poll_interval_seconds": 1}, outbox={"first_retry_seconds": 1})
    path = tmp_path / "config.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    return path


def cli(config: Path, *args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ticketure_mail", "--config", str(config), *args],
        input=stdin, capture_output=True, timeout=timeout, cwd=config.parent,
    )


def test_help_names_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "ticketure_mail", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("run", "poll", "ingest", "tickets", "report", "explain", "outbox", "quarantine", "check-config"):
        assert command in done.stdout


def test_ingest_json_then_tickets_list_and_show(config: Path) -> None:
    message = config.parent / "m.eml"
    message.write_bytes(raw_message(subject="Urgent Priority: checkout broken", sender="Ana <ana@example.com>",
                                    message_id="<cli-1@example.com>"))
    done = cli(config, "ingest", "--json", "--received-at", "2026-12-03T15:00:00Z", str(message))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "created"
    assert result["ticket"] == "TKT-000001"
    assert result["priority"] == 1
    assert result["request_type"] == "urgent"
    assert result["subject"] == "Urgent Priority: checkout broken"
    assert result["from"] == "ana@example.com"
    assert result["due_at"] == "2026-12-03T15:15:00Z"
    assert result["ack"] is True
    assert result["reason"] == ""

    again = cli(config, "ingest", "--json", "-", stdin=message.read_bytes())
    assert json.loads(again.stdout)["outcome"] == "duplicate"
    assert json.loads(again.stdout)["reason"]

    listed = json.loads(cli(config, "tickets", "list", "--json").stdout)
    assert [t["reference"] for t in listed] == ["TKT-000001"]
    shown = json.loads(cli(config, "tickets", "show", "TKT-000001", "--json").stdout)
    assert shown["requester"] == "ana@example.com" and shown["status"] == "open"
    assert [m["message_id"] for m in shown["messages"]] == ["cli-1@example.com"]
    text = cli(config, "tickets", "show", "tkt-1").stdout.decode()
    assert "TKT-000001" in text and "15:15" in text
    assert cli(config, "tickets", "show", "TKT-000099").returncode == 1


def test_ingest_plain_line_and_bad_arrival_time(config: Path) -> None:
    message = config.parent / "m.eml"
    message.write_bytes(raw_message(message_id="<cli-2@example.com>"))
    done = cli(config, "ingest", str(message))
    assert done.returncode == 0 and done.stdout.decode().startswith("created TKT-")
    assert " due " in done.stdout.decode() and "(Europe/London)" in done.stdout.decode()  # as every command shows it
    bad = cli(config, "ingest", "--received-at", "yesterday", str(message))
    assert bad.returncode == 2 and b"--received-at" in bad.stderr


def test_poll_once_processes_and_sends(config: Path, mailbox: ImapAccount, sink: SmtpSink) -> None:
    mailbox.append(raw_message(message_id="<cli-poll@example.com>", sender="di@example.com"))
    done = cli(config, "poll", "--once")
    assert done.returncode == 0, done.stderr
    assert b"processed 1 message(s) (created 1); sent 1" in done.stdout
    assert b"created message-id=<cli-poll@example.com> source=imap:INBOX:" in done.stderr
    [ack] = sink.wait_for(1)
    assert ack.rcpt_tos == ["di@example.com"]


def test_outbox_failure_is_listed_and_can_be_retried(config: Path, mailbox: ImapAccount, sink: SmtpSink) -> None:
    mailbox.append(raw_message(message_id="<cli-550@example.com>", sender="gone@example.com"))
    sink.fail_next(550)
    assert cli(config, "poll", "--once").returncode == 0
    listed = json.loads(cli(config, "outbox", "list", "--json").stdout)
    assert [(i["status"], i["recipient"]) for i in listed] == [("failed", "gone@example.com")]
    assert "550" in listed[0]["last_error"]
    assert cli(config, "outbox", "retry", str(listed[0]["id"])).returncode == 0
    assert cli(config, "poll", "--once").returncode == 0
    assert len(sink.wait_for(1)) == 1
    assert json.loads(cli(config, "outbox", "list", "--json").stdout) == []


def test_quarantine_list_and_retry(config: Path) -> None:
    message = config.parent / "noone.eml"
    message.write_bytes(b"Subject: nobody sent this\r\nMessage-ID: <q1@example.com>\r\n\r\nbody\r\n")
    done = cli(config, "ingest", "--json", str(message))
    assert json.loads(done.stdout)["outcome"] == "quarantined"
    held = json.loads(cli(config, "quarantine", "list", "--json").stdout)
    assert len(held) == 1 and "sender" in held[0]["reason"] and held[0]["retryable"]
    retried = cli(config, "quarantine", "retry", "all")
    assert retried.returncode == 1  # still no sender: held again, under the same entry
    assert retried.stdout.decode().startswith(f"{held[0]['id']}: still quarantined (")
    again = json.loads(cli(config, "quarantine", "list", "--json").stdout)
    assert [e["id"] for e in again] == [held[0]["id"]]


def test_check_config_logs_in_to_both_servers(config: Path, tmp_path: Path) -> None:
    done = cli(config, "check-config")
    assert done.returncode == 0, done.stdout
    out = done.stdout.decode()
    assert "imap: ok" in out and "smtp: ok" in out and "database: ok" in out
    (tmp_path / "pw").write_text("wrong-password\n", encoding="utf-8")
    failed = cli(config, "check-config")
    assert failed.returncode == 1
    assert "imap: FAILED" in failed.stdout.decode()


def test_missing_secret_is_a_config_error(config: Path) -> None:
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace(f'password_file = "{config.parent / "pw"}"', 'password_env = "NO_SUCH_VARIABLE_X"'),
                      encoding="utf-8")
    done = cli(config, "poll", "--once")
    assert done.returncode == 2
    assert b"imap.password_env" in done.stderr and b"NO_SUCH_VARIABLE_X" in done.stderr


def test_daemon_acknowledges_new_mail_and_stops_on_sigterm(config: Path, mailbox: ImapAccount, sink: SmtpSink) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ticketure_mail", "--config", str(config), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=config.parent,
    )
    try:
        uid = mailbox.append(raw_message(subject="URGENT: site down", message_id="<daemon@example.com>",
                                         sender="ops@example.com"))
        [ack] = sink.wait_for(1, timeout=30)
        assert ack.rcpt_tos == ["ops@example.com"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "created message-id=<daemon@example.com> source=imap:INBOX:" in log
    assert f":{uid} ticket=TKT-000001 priority=1" in log
    assert "daemon stopped" in log


@pytest.fixture
def config_without_database(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path) -> Path:
    table = config_table(mailbox, sink, "postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2",
                         tmp_path / "pw")
    path = tmp_path / "down.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    return path


def test_database_down_means_tempfail_for_ingest_and_one_line_elsewhere(config_without_database: Path) -> None:
    message = config_without_database.parent / "m.eml"
    message.write_bytes(raw_message(message_id="<db-down@example.com>"))
    ingest = cli(config_without_database, "ingest", str(message))
    assert ingest.returncode == 75, ingest.stderr  # EX_TEMPFAIL: the mail server keeps it and retries
    listing = cli(config_without_database, "tickets", "list")
    assert listing.returncode == 1
    for done in (ingest, listing):
        assert b"Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert b"database" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "--received-at", "9999-12-31T23:59:59-01:00", "-"],
        ["ingest", "--received-at", "0001-01-01T00:00:00+01:00", "-"],
        ["outbox", "retry", "99999999999999999999999"],
        ["outbox", "retry", "-1"],
        ["quarantine", "retry", "\u00b2"],
    ],
)
def test_out_of_range_arguments_are_usage_errors(config: Path, args: list[str]) -> None:
    done = cli(config, *args, stdin=b"")
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["ingest", "--received-at", "yesterday", "-"], "ingest"),
        (["tickets", "respond", "TKT-1", "--at", "2026-12-03"], "tickets respond"),
        (["explain", "--received-at", "soon", "-"], "explain"),
        (["report", "--since", "tomorrow"], "report"),
    ],
)
def test_a_bad_time_shows_its_own_commands_usage(config: Path, args: list[str], usage: str) -> None:
    done = cli(config, *args, stdin=b"")
    assert done.returncode == 2
    usages = [line for line in done.stderr.decode().splitlines() if line.startswith("usage:")]
    assert len(usages) == 1 and usages[0].startswith(f"usage: ticketure-mail {usage} "), done.stderr


def test_a_response_in_the_future_is_refused(config: Path) -> None:
    message = config.parent / "m.eml"
    message.write_bytes(raw_message(message_id="<future@example.com>"))
    assert cli(config, "ingest", str(message)).returncode == 0
    done = cli(config, "tickets", "respond", "TKT-000001", "--at", "2999-01-01T00:00:00Z")
    assert done.returncode == 2 and b"in the future" in done.stderr
    shown = json.loads(cli(config, "tickets", "show", "TKT-000001", "--json").stdout)
    assert shown["first_response_at"] is None


def test_a_reader_that_goes_away_gets_no_error(config: Path) -> None:
    message = config.parent / "m.eml"
    message.write_bytes(raw_message(message_id="<pipe@example.com>", body="line\n" * 20000))
    assert cli(config, "ingest", str(message)).returncode == 0
    shown = subprocess.run(
        f"{sys.executable} -m ticketure_mail --config {config} tickets show TKT-000001 | head -c 10",
        shell=True, capture_output=True, timeout=60, cwd=config.parent,
    )
    assert shown.stdout.startswith(b"TKT-000001")
    assert b"Broken pipe" not in shown.stderr and b"Traceback" not in shown.stderr


def test_an_unopenable_sqlite_file_is_named(mailbox: ImapAccount, sink: SmtpSink, tmp_path: Path) -> None:
    table = config_table(mailbox, sink, "sqlite:///no/such/folder/tickets.sqlite3", tmp_path / "pw")
    path = tmp_path / "config.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    done = cli(path, "tickets", "list")
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert str(tmp_path / "no/such/folder/tickets.sqlite3").encode() in done.stderr


def test_commands_give_up_on_a_message_that_hangs_the_parser(mailbox: ImapAccount, sink: SmtpSink,
                                                              tmp_path: Path) -> None:
    # As the daemon does: ingest, explain and quarantine retry parse in a parser process that
    # is given up after workers.parse_timeout_seconds, so a pipe delivery or an admin's retry
    # is not held for the hours such a message can take.
    table = config_table(mailbox, sink, f"sqlite:///{tmp_path / 'slow.sqlite3'}", tmp_path / "pw",
                         workers={"parse_timeout_seconds": 1})
    config = tmp_path / "config.toml"
    config.write_text(toml_text(table), encoding="utf-8")
    message = tmp_path / "slow.eml"
    message.write_bytes(slow_to_parse("slow-1@example.org"))

    ingested = cli(config, "ingest", "--json", str(message), timeout=30)
    result = json.loads(ingested.stdout)
    assert (result["outcome"], "took longer" in result["reason"]) == ("quarantined", True), result
    explained = json.loads(cli(config, "explain", "--json", str(message), timeout=30).stdout)
    assert explained["outcome"] == "quarantined" and "took longer" in explained["reason"]
    retried = cli(config, "quarantine", "retry", "all", timeout=30)
    assert retried.returncode == 1 and b"still quarantined (cannot parse: parsing took longer" in retried.stdout
