"""Loading settings: the example file, and one clear error naming file and key for each mistake."""

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from ticketure_mail.config import (
    OpeningHours,
    Settings,
    StaffSettings,
    TemplateSettings,
    database_url,
    find_config_path,
    load_settings,
    parse_duration,
    read_secret,
)
from ticketure_mail.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"
PRODUCT = ROOT.parent / "shared" / "PRODUCT.md"

MINIMAL = """
[imap]
host = "127.0.0.1"
username = "u"
password_env = "T_IMAP"
[smtp]
host = "127.0.0.1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_and_carries_the_support_terms() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.support.address == "support@ticketure.com"
    assert settings.urgency.markers == ("Urgent", "Urgent-Priority", "Urgent Priority")
    assert [p.number for p in settings.escalation.phones] == ["844-830-9595", "+44 0800 031 8902"]
    t = settings.targets
    assert [(parse_duration(x.within), x.clock) for x in (t.priority_1, t.priority_2, t.priority_3, t.priority_4)] == [
        (timedelta(minutes=15), "24x7"), (timedelta(hours=1), "24x7"), (timedelta(days=3), "24x7"),
        (timedelta(days=7), "24x7")]
    assert (parse_duration(t.standard.within), t.standard.clock) == (timedelta(hours=24), "business")
    assert settings.calendar.working_days == ("mon", "tue", "wed", "thu", "fri")
    # Whole days, no public holidays unless asked for, no staff, alerts only logged.
    assert settings.calendar.opening_hours == OpeningHours()
    assert settings.calendar.holiday_country == "" and settings.staff == StaffSettings()
    assert settings.watcher.alert_address == ""
    assert [r.type for r in settings.request_types.rules] == [
        "standard", "api_request", "web_refinement", "product_feedback", "product_feedback"]
    assert settings.templates == TemplateSettings()


def test_example_config_matches_the_defaults() -> None:
    """Every key in the example shows its default: loading it equals loading nothing optional."""
    example = load_settings(EXAMPLE)
    defaults = Settings(imap=example.imap, smtp=example.smtp, source=example.source)
    assert example == defaults


def test_phone_numbers_in_example_are_the_product_facts() -> None:
    text = PRODUCT.read_text(encoding="utf-8")
    for phone in load_settings(EXAMPLE).escalation.phones:
        assert phone.number in text


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.imap.port == 993 and settings.imap.tls == "ssl" and settings.imap.verify_certificate
    assert settings.database.url == "sqlite:///ticketure-mail.sqlite3"
    assert settings.schedule.poll_interval_seconds == 60


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("[imap2]\nx = 1\n", "imap2", "unknown key"),
        ("[schedule]\npoll_interval_seconds = \"often\"\n", "schedule.poll_interval_seconds", "whole number"),
        ("[schedule]\npoll_interval_seconds = 0\n", "schedule.poll_interval_seconds", "at least 1"),
        ("[database]\nurl = 5\n", "database.url", "must be a string"),
        ("[calendar]\ntimezone = \"Mars/Olympus\"\n", "calendar.timezone", "unknown time zone"),
        ("[calendar]\nworking_days = [\"monday\"]\n", "calendar.working_days[0]", "must be one of"),
        ("[calendar]\nholidays = [\"2026-12-25\"]\n", "calendar.holidays[0]", "must be a date"),
        ("[urgency]\nmarkers = []\n", "urgency.markers", "at least one"),
        ("[[escalation.phones]]\nlabel = \"x\"\n", "escalation.phones[0].number", "required key is missing"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_unknown_key_inside_a_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL.replace('username = "u"', 'username = "u"\nusrname = "typo"')))
    assert caught.value.key == "imap.usrname"


def test_bad_tls_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL.replace('host = "127.0.0.1"\nusername', 'host = "127.0.0.1"\ntls = "yes"\nusername')))
    assert caught.value.key == "imap.tls"
    assert "'ssl', 'starttls', 'none'" in caught.value.problem


def test_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL.replace('host = "127.0.0.1"\nusername', 'username', 1)))
    assert caught.value.key == "imap.host"
    assert "required" in caught.value.problem


def test_password_may_not_sit_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL.replace('password_env = "T_IMAP"', 'password = "hunter2"')))
    assert caught.value.key == "imap.password"


def test_holidays_are_dates(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + "[calendar]\nholidays = [2026-12-25]\n"))
    assert settings.calendar.holidays == (date(2026, 12, 25),)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[imap\n"))
    with pytest.raises(ConfigError, match="cannot read file"):
        load_settings(tmp_path)  # a directory


def test_secrets_from_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    monkeypatch.delenv("T_IMAP", raising=False)
    with pytest.raises(ConfigError) as caught:
        read_secret(settings, "imap")
    assert caught.value.key == "imap.password_env" and "T_IMAP is not set" in caught.value.problem
    monkeypatch.setenv("T_IMAP", "s3cret")
    assert read_secret(settings, "imap") == "s3cret"
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, MINIMAL.replace('password_env = "T_IMAP"', f'password_file = "{secret_file}"')))
    assert read_secret(settings, "imap") == "from-file"
    assert read_secret(settings, "smtp") == ""


def test_config_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETURE_MAIL_CONFIG", "/etc/t.toml")
    assert find_config_path("x.toml") == Path("x.toml")
    assert find_config_path(None) == Path("/etc/t.toml")
    monkeypatch.delenv("TICKETURE_MAIL_CONFIG")
    assert find_config_path(None) == Path("config.toml")


def test_cli_reports_a_broken_config_in_one_line_with_status_2(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[schedule]\npoll_interval_seconds = \"soon\"\n")
    done = subprocess.run(
        [sys.executable, "-m", "ticketure_mail", "--config", str(path), "tickets", "list"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0] and "schedule.poll_interval_seconds" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('[targets]\npriority_2 = { within = "soon", clock = "24x7" }\n', "targets.priority_2.within", "duration"),
        ('[targets]\npriority_2 = { within = "0m", clock = "24x7" }\n', "targets.priority_2.within", "one minute"),
        ('[targets]\nstandard = { within = "3d", clock = "business" }\n', "targets.standard.within", "open hours"),
        ('[targets]\nstandard = { within = "16h" }\n', "targets.standard.clock", "required key is missing"),
        ('[targets]\nstandard = { within = "16h", clock = "office" }\n', "targets.standard.clock", "must be one of"),
        ('[targets]\npriority_5 = { within = "1h", clock = "24x7" }\n', "targets.priority_5", "unknown key"),
        ('[calendar.opening_hours]\nmon = ["09:00"]\n', "calendar.opening_hours.mon", "pairs"),
        ('[calendar.opening_hours]\nmon = ["9am", "5pm"]\n', "calendar.opening_hours.mon[0]", "HH:MM"),
        ('[calendar.opening_hours]\nmon = ["17:30", "09:00"]\n', "calendar.opening_hours.mon", "rise"),
        ('[calendar.opening_hours]\nsat = ["09:00", "12:00"]\n', "calendar.opening_hours.sat", "working_days"),
        ('[calendar.opening_hours]\nmonday = ["09:00", "17:00"]\n', "calendar.opening_hours.monday", "unknown key"),
        ('[calendar]\nholiday_country = "XX"\n', "calendar.holiday_country", "unknown country"),
        ('[calendar]\nholiday_country = "GB"\nholiday_subdivision = "KENT"\n', "calendar.holiday_subdivision",
         "unknown subdivision"),
        ('[calendar]\nholiday_subdivision = "ENG"\n', "calendar.holiday_subdivision", "holiday_country"),
        ('[[request_types.rules]]\nname = "x"\ntype = "urgent"\nwords = ["a"]\n', "request_types.rules[0].type",
         "must be one of"),
        ('[[request_types.rules]]\nname = "x"\ntype = "api_request"\nwords = []\n', "request_types.rules[0].words",
         "at least one"),
        ('[[request_types.rules]]\nname = "x"\ntype = "api_request"\nwords = ["a"]\nlook_in = ["footer"]\n',
         "request_types.rules[0].look_in[0]", "must be one of"),
        ('[[request_types.rules]]\nname = "x"\ntype = "api_request"\nwords = ["a"]\n'
         '[[request_types.rules]]\nname = "x"\ntype = "standard"\nwords = ["b"]\n', "request_types.rules[1].name",
         "already"),
        ('[staff]\naddresses = ["not an address"]\n', "staff.addresses[0]", "email address"),
        ('[staff]\ndomains = ["@ticketure.com"]\n', "staff.domains[0]", "domain"),
        ('[watcher]\nalert_address = "leads"\n', "watcher.alert_address", "email address"),
        ('[watcher.due_soon_before]\npriority_1 = "soon"\n', "watcher.due_soon_before.priority_1", "duration"),
        ('[templates]\nstandard = "missing.txt"\n', "templates.standard", "cannot read"),
        ('[templates]\nsupport = ""\n', "templates.support", "unknown key"),
    ],
)
def test_policy_mistakes_name_the_key(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_a_template_with_an_unknown_placeholder_stops_start_up(tmp_path: Path) -> None:
    template = tmp_path / "api.txt"
    template.write_text("Hello $greeting_name, your ticket $ticket_number is open.\n", encoding="utf-8")
    path = write(tmp_path, MINIMAL + '[templates]\napi_request = "api.txt"\n')  # relative to the config file
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.key == "templates.api_request"
    assert str(template) in caught.value.problem and "$ticket_number" in caught.value.problem
    done = subprocess.run(
        [sys.executable, "-m", "ticketure_mail", "--config", str(path), "tickets", "list"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 2
    assert "templates.api_request" in done.stderr and "$ticket_number" in done.stderr


def test_a_stray_dollar_in_a_template_is_refused(tmp_path: Path) -> None:
    (tmp_path / "web.txt").write_text("It costs $5.\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + '[templates]\nweb_refinement = "web.txt"\n'))
    assert caught.value.key == "templates.web_refinement" and "$$" in caught.value.problem


def test_a_full_policy_loads(tmp_path: Path) -> None:
    (tmp_path / "std.txt").write_text("Ticket $reference, due $due ($target). $$5 fee.\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, MINIMAL + """
[targets]
standard = { within = "16h", clock = "business" }
priority_2 = { within = "1h30m", clock = "business" }
[calendar]
timezone = "America/New_York"
holiday_country = "US"
holiday_subdivision = "NY"
[calendar.opening_hours]
mon = ["08:00", "12:00", "13:00", "18:00"]
fri = ["08:00", "24:00"]
[[request_types.rules]]
name = "only"
type = "web_refinement"
words = ["banner"]
look_in = ["subject"]
[templates]
standard = "std.txt"
[staff]
addresses = ["lead@partner.example"]
domains = ["ticketure.com"]
[watcher]
alert_address = "leads@ticketure.com"
interval_seconds = 30
[watcher.due_soon_before]
priority_4 = "0m"
"""))
    assert settings.targets.priority_2.within == "1h30m" and parse_duration("1h30m") == timedelta(minutes=90)
    assert settings.calendar.opening_hours.fri == ("08:00", "24:00")
    assert [r.name for r in settings.request_types.rules] == ["only"]
    assert settings.watcher.due_soon_before.priority_4 == "0m" and settings.watcher.due_soon_before.priority_1 == "5m"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[database]\nurl = "not a url at all"\n', "database.url"),
        ('[database]\nurl = "nosuchdialect://x"\n', "database.url"),
        ('[database]\nurl = "postgresql+nosuchdriver://x/y"\n', "database.url"),
        ("[outbox]\ngive_up_after_hours = 100000000000\n", "outbox.give_up_after_hours"),
        ("[outbox]\nfirst_retry_seconds = 100000000000\n", "outbox.first_retry_seconds"),
        ("[schedule]\npoll_interval_seconds = 100000000000\n", "schedule.poll_interval_seconds"),
        ('[targets]\npriority_1 = { within = "99999999999d", clock = "24x7" }\n', "targets.priority_1.within"),
        ("[smtp]\ntimeout_seconds = inf\n", "smtp.timeout_seconds"),
        ('[calendar]\ntimezone = "America"\n', "calendar.timezone"),
        ('[calendar]\ntimezone = "' + "x" * 300 + '"\n', "calendar.timezone"),
        ("[[acknowledgement.rate_limits]]\nacknowledgements = 5\nminutes = 100000000000\n",
         "acknowledgement.rate_limits[0].minutes"),
    ],
)
def test_values_that_would_fail_later_fail_at_load_naming_the_key(tmp_path: Path, extra: str, key: str) -> None:
    text = MINIMAL + extra
    if extra.startswith("[smtp]"):
        text = MINIMAL.replace('[smtp]\nhost = "127.0.0.1"', '[smtp]\nhost = "127.0.0.1"\n' + extra.split("\n", 1)[1])
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert caught.value.key == key


def test_a_key_with_control_characters_is_named_safely(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + '[schedule]\n"a\\nb\\u001b[31mRED" = 1\n'))
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_toml_nested_too_deep_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n"))


def test_a_config_that_is_not_a_regular_file_or_is_huge(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(fifo)
    huge = tmp_path / "huge.toml"
    with huge.open("wb") as f:
        f.truncate(5 * 1024 * 1024)
    with pytest.raises(ConfigError, match="too large"):
        load_settings(huge)


@pytest.mark.parametrize("content", [b"\xff\xfe bad utf-8", b"pass\x00word"])
def test_a_password_file_that_cannot_be_a_password(tmp_path: Path, content: bytes) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(content)
    settings = load_settings(write(tmp_path, MINIMAL.replace('password_env = "T_IMAP"', f'password_file = "{secret}"')))
    with pytest.raises(ConfigError) as caught:
        read_secret(settings, "imap")
    assert caught.value.key == "imap.password_file"


def test_relative_file_names_are_the_config_files_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cron job or a service manager runs in another folder: the database and the secrets must
    # be the same ones whatever the working directory, as the templates already were.
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "imap.pw").write_text("from-file\n", encoding="utf-8")
    path = folder / "config.toml"
    path.write_text(MINIMAL.replace('password_env = "T_IMAP"', 'password_file = "imap.pw"')
                    + '[database]\nurl = "sqlite:///data/tickets.sqlite3"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(path)
    assert read_secret(settings, "imap") == "from-file"
    assert database_url(settings) == f"sqlite:///{folder / 'data' / 'tickets.sqlite3'}"


@pytest.mark.parametrize(
    "url",
    ["sqlite:////var/lib/ticketure/tickets.sqlite3", "sqlite://", "sqlite:///:memory:",
     "postgresql+psycopg://ticketure@127.0.0.1/test"],
)
def test_absolute_and_other_database_urls_are_kept(tmp_path: Path, url: str) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + f'[database]\nurl = "{url}"\n'))
    assert database_url(settings) == url


def test_no_smtp_login_needs_no_smtp_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example names an environment variable for a login that may not be used at all.
    settings = load_settings(write(tmp_path, MINIMAL + 'username = ""\npassword_env = "T_SMTP_UNSET"\n'))
    monkeypatch.delenv("T_SMTP_UNSET", raising=False)
    assert read_secret(settings, "smtp") == ""


def test_a_password_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n", encoding="utf-8")
    secret.chmod(0o644)
    settings = load_settings(write(tmp_path, MINIMAL.replace('password_env = "T_IMAP"', f'password_file = "{secret}"')))
    assert read_secret(settings, "imap") == "s3cret"
    assert "can be read by other users" in caplog.text
    caplog.clear()
    secret.chmod(0o600)
    read_secret(settings, "imap")
    assert "other users" not in caplog.text
