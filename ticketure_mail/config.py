"""Loads and validates the TOML settings into frozen objects; every problem names its file and key."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from .ack_templates import load_templates
from .errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "TICKETURE_MAIL_CONFIG"
# A real config is a few kilobytes; a multi-gigabyte file must not be read whole first.
_MAX_CONFIG_BYTES = 1024 * 1024
DEFAULT_CONFIG_PATH = "config.toml"

TlsMode = Literal["ssl", "starttls", "none"]
ProcessedAction = Literal["seen", "move"]
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ClockName = Literal["24x7", "business"]
# The request types a rule may give; urgent comes from the urgency marker alone.
RuleType = Literal["standard", "web_refinement", "product_feedback", "api_request"]
LookIn = Literal["subject", "body"]


@dataclass(frozen=True)
class SupportSettings:
    address: str = "support@ticketure.com"
    name: str = "Ticketure Support"
    reference_prefix: str = "TKT"


@dataclass(frozen=True)
class ImapSettings:
    host: str
    username: str
    port: int = 993
    tls: TlsMode = "ssl"
    verify_certificate: bool = True
    ca_file: str = ""
    password_env: str = ""
    password_file: str = ""
    folder: str = "INBOX"
    processed_action: ProcessedAction = "seen"
    processed_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    batch_size: int = 100
    max_message_bytes: int = 26_214_400
    connect_timeout_seconds: float = 15.0
    read_timeout_seconds: float = 60.0
    # Wait for new mail with IMAP IDLE between polls (when the server offers it).
    idle: bool = True
    # Leave and re-enter IDLE this often, to find connections dropped without a goodbye.
    idle_refresh_minutes: float = 10.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    tls: TlsMode = "starttls"
    verify_certificate: bool = True
    ca_file: str = ""
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    from_address: str = "support@ticketure.com"
    from_name: str = "Ticketure Support"
    # Empty: acknowledgements go out with the null envelope sender (RFC 3834 section 3.3).
    envelope_sender: str = ""
    timeout_seconds: float = 30.0
    # For one message's MAIL, RCPT and DATA, above all the reply to its end of data, which a
    # relay that scans mail may take minutes to give (RFC 5321 section 4.5.3.2.6: 10 minutes).
    # Giving up sooner makes a message the relay accepted look failed, and it is sent again.
    data_timeout_seconds: float = 600.0
    # SMTP connections used at once to send a backlog; each has one message in flight at a time.
    # One by default: a crash then repeats at most one acknowledgement (see README, Guarantees).
    connections: int = 1


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///ticketure-mail.sqlite3"


@dataclass(frozen=True)
class ScheduleSettings:
    poll_interval_seconds: int = 60


@dataclass(frozen=True)
class WorkerSettings:
    # Python runs one thread of a process at a time: parsing in a child process runs beside
    # storing and sending instead of taking turns with them.
    # Child processes that parse fetched mail; 0 parses in the daemon's own process.
    parser_processes: int = 1
    # A message still being parsed after this long is quarantined and its parser restarted.
    parse_timeout_seconds: int = 60
    # Address space each parser process may use; a message that needs more is quarantined
    # (MemoryError) instead of the kernel ending a process, perhaps the daemon. 0: no limit.
    parser_memory_mb: int = 2048


@dataclass(frozen=True)
class OutboxSettings:
    max_attempts: int = 8
    first_retry_seconds: int = 30
    give_up_after_hours: int = 48


@dataclass(frozen=True)
class UrgencySettings:
    markers: tuple[str, ...] = ("Urgent", "Urgent-Priority", "Urgent Priority")
    negations: tuple[str, ...] = ("not", "non")


@dataclass(frozen=True)
class TargetSetting:
    """A first-response target: a duration ("15m", "24h", "3d") and the clock it runs on."""

    within: str
    # No default: a target that silently changed clock when one key was left out would break a promise.
    clock: ClockName


@dataclass(frozen=True)
class TargetSettings:
    """Targets per priority and per request type (urgent requests follow priority 1).

    Before triage a ticket is held to its request type's target; once the urgency marker or
    staff set its priority, to that priority's target (see deadlines.ServicePolicy.target_for).
    """

    priority_1: TargetSetting = TargetSetting("15m", "24x7")
    priority_2: TargetSetting = TargetSetting("1h", "24x7")
    priority_3: TargetSetting = TargetSetting("3d", "24x7")
    priority_4: TargetSetting = TargetSetting("7d", "24x7")
    standard: TargetSetting = TargetSetting("24h", "business")
    web_refinement: TargetSetting = TargetSetting("3d", "24x7")
    product_feedback: TargetSetting = TargetSetting("3d", "24x7")
    api_request: TargetSetting = TargetSetting("3d", "24x7")


@dataclass(frozen=True)
class OpeningHours:
    """Local opening and closing times per weekday, as "HH:MM" pairs; () is open all day."""

    mon: tuple[str, ...] = ()
    tue: tuple[str, ...] = ()
    wed: tuple[str, ...] = ()
    thu: tuple[str, ...] = ()
    fri: tuple[str, ...] = ()
    sat: tuple[str, ...] = ()
    sun: tuple[str, ...] = ()


@dataclass(frozen=True)
class CalendarSettings:
    timezone: str = "UTC"
    working_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    holidays: tuple[date, ...] = ()
    # ISO 3166 code whose public holidays (from the holidays package) also stop the clock; "" for none.
    holiday_country: str = ""
    holiday_subdivision: str = ""
    opening_hours: OpeningHours = field(default_factory=OpeningHours)


@dataclass(frozen=True)
class TypeRule:
    """Words or phrases that make a new message a request of one type; see request_types.py."""

    name: str
    type: RuleType
    words: tuple[str, ...]
    look_in: tuple[LookIn, ...] = ("subject", "body")


DEFAULT_TYPE_RULES = (
    TypeRule("standard-support", "standard", ("cart rule", "cart rules", "checkout rule", "checkout rules", "Kibana")),
    TypeRule(
        "api-request",
        "api_request",
        ("API request", "API access", "API key", "API keys", "integration", "integrations", "integrate",
         "webhook", "webhooks", "endpoint", "endpoints", "technical implementation"),
    ),
    TypeRule(
        "web-refinement",
        "web_refinement",
        ("website text", "website copy", "copy change", "wording", "typo", "typos", "font", "fonts", "styling",
         "stylesheet", "CSS", "colour", "colours", "color", "colors", "design change", "minor design"),
    ),
    TypeRule(
        "product-feedback",
        "product_feedback",
        ("bug", "bugs", "feature request", "product feedback", "suggestion", "suggestions"),
    ),
    # Short product names are looked for in the subject only: they turn up in signatures and footers.
    TypeRule("platform-part", "product_feedback", ("CRM", "CMS", "POS", "point of sale"), ("subject",)),
)


@dataclass(frozen=True)
class RequestTypeSettings:
    # Tried in order; the first rule with a word in the places it looks wins; none: standard support.
    rules: tuple[TypeRule, ...] = DEFAULT_TYPE_RULES


@dataclass(frozen=True)
class TemplateSettings:
    """Files holding acknowledgement texts; "" is the built-in text of the same name."""

    standard: str = ""
    web_refinement: str = ""
    product_feedback: str = ""
    api_request: str = ""
    urgent: str = ""
    escalated: str = ""


@dataclass(frozen=True)
class StaffSettings:
    # Mail from these addresses, or from these domains and their subdomains, is from staff.
    addresses: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class DueSoonSettings:
    """How long before its deadline a ticket counts as due soon, per priority (real time)."""

    priority_1: str = "5m"
    priority_2: str = "15m"
    priority_3: str = "4h"
    priority_4: str = "1d"


@dataclass(frozen=True)
class WatcherSettings:
    # Where deadline alerts go; "" writes them to the log only.
    alert_address: str = ""
    interval_seconds: int = 60
    due_soon_before: DueSoonSettings = field(default_factory=DueSoonSettings)


@dataclass(frozen=True)
class PhoneNumber:
    label: str
    number: str


@dataclass(frozen=True)
class EscalationSettings:
    phones: tuple[PhoneNumber, ...] = (
        PhoneNumber("US customer support", "844-830-9595"),
        PhoneNumber("UK customer support", "+44 0800 031 8902"),
    )


@dataclass(frozen=True)
class RateLimit:
    """At most ``acknowledgements`` to one address within ``minutes``."""

    acknowledgements: int
    minutes: int


@dataclass(frozen=True)
class AcknowledgementSettings:
    # A follow-up in an existing ticket gets no new acknowledgement unless this is on.
    acknowledge_followups: bool = False
    # Sliding windows per recipient; past any of them acknowledgements are suppressed, which
    # stops a flood from one address and a loop with another robot.
    rate_limits: tuple[RateLimit, ...] = (RateLimit(5, 10), RateLimit(20, 1440))


@dataclass(frozen=True)
class AttachmentSettings:
    # Decoded attachment bytes kept per message; files past it are left out and noted on the ticket.
    max_bytes_per_message: int = 26_214_400


@dataclass(frozen=True)
class ThreadingSettings:
    # Who may join a ticket by its reference in the subject alone (no In-Reply-To/References):
    # "participants" (the requester and earlier senders) or "anyone".
    subject_reference_from: Literal["participants", "anyone"] = "participants"


@dataclass(frozen=True)
class Settings:
    imap: ImapSettings
    smtp: SmtpSettings
    support: SupportSettings = field(default_factory=SupportSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    urgency: UrgencySettings = field(default_factory=UrgencySettings)
    targets: TargetSettings = field(default_factory=TargetSettings)
    calendar: CalendarSettings = field(default_factory=CalendarSettings)
    escalation: EscalationSettings = field(default_factory=EscalationSettings)
    acknowledgement: AcknowledgementSettings = field(default_factory=AcknowledgementSettings)
    threading: ThreadingSettings = field(default_factory=ThreadingSettings)
    attachments: AttachmentSettings = field(default_factory=AttachmentSettings)
    request_types: RequestTypeSettings = field(default_factory=RequestTypeSettings)
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    staff: StaffSettings = field(default_factory=StaffSettings)
    watcher: WatcherSettings = field(default_factory=WatcherSettings)
    # Where the settings came from, so later errors (a missing secret) can name the file.
    source: str = field(default="<defaults>", metadata={"internal": True})

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.calendar.timezone)


def find_config_path(explicit: str | None) -> Path:
    """``--config``, else ``$TICKETURE_MAIL_CONFIG``, else ``./config.toml``."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV_VAR, "")
    if from_env:
        return Path(from_env)
    return Path(DEFAULT_CONFIG_PATH)


def load_settings(path: Path) -> Settings:
    """Read and validate a config file; raises ConfigError naming the file and the key."""
    shown = str(path)
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            # A FIFO or a device would block or never end; a directory cannot be a config.
            raise ConfigError(shown, "", "cannot read file: not a regular file")
        if status.st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(shown, "", f"file too large for a config ({status.st_size} bytes)")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "", f"cannot read file: {exc}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(shown, "", "not valid TOML: nested too deeply") from None
    settings = _build(Settings, table, shown, "")
    settings = dataclasses.replace(settings, source=shown)
    _check_semantics(settings)
    return settings


def settings_from_dict(table: dict[str, Any], source: str = "<dict>") -> Settings:
    """Validate an already-parsed table, as load_settings does; for tests and embedding."""
    settings = dataclasses.replace(_build(Settings, table, source, ""), source=source)
    _check_semantics(settings)
    return settings


def read_secret(settings: Settings, section: Literal["imap", "smtp"]) -> str:
    """The password a section names through ``password_env`` or ``password_file``; "" if none
    (and always "" for SMTP without a username: no login, no password)."""
    part: ImapSettings | SmtpSettings = getattr(settings, section)
    if section == "smtp" and not settings.smtp.username:
        return ""
    if part.password_env:
        value = os.environ.get(part.password_env)
        if value is None:
            raise ConfigError(
                settings.source,
                f"{section}.password_env",
                f"environment variable {part.password_env} is not set",
            )
        return value
    if part.password_file:
        path = config_dir(settings) / part.password_file
        try:
            if path.stat().st_mode & 0o077:
                log.warning("%s.password_file %s can be read by other users: chmod 600 it", section, path)
            secret = path.read_text(encoding="utf-8").strip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError(settings.source, f"{section}.password_file", "is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(
                settings.source,
                f"{section}.password_file",
                f"cannot read {part.password_file}: {exc.strerror}",
            ) from None
        if "\x00" in secret:
            raise ConfigError(settings.source, f"{section}.password_file", "contains a NUL byte")
        return secret
    return ""


# --- validation -----------------------------------------------------------------------------


def _build(cls: type[Any], table: Any, path: str, prefix: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(path, prefix or "<top level>", "must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if key not in known:
            raise ConfigError(path, _join(prefix, key), "unknown key")
    values: dict[str, Any] = {}
    for name, fld in known.items():
        key = _join(prefix, name)
        if name in table:
            values[name] = _convert(hints[name], table[name], path, key)
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                # A required section: build it from an empty table so the missing key is named.
                values[name] = _build(hints[name], {}, path, key)
            else:
                raise ConfigError(path, key, "required key is missing")
    return cls(**values)


def _convert(hint: Any, value: Any, path: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, key)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(path, key, f"must be one of {', '.join(map(repr, allowed))}, not {value!r}")
        return value
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(path, key, "must be an array")
        return tuple(_convert(item_hint, item, path, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        raise AssertionError(f"unsupported settings type {hint}")  # pragma: no cover
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, key, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, key, f"must be a whole number, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, key, f"must be a number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, key, f"must be a string, not {value!r}")
        return value
    if hint is date:
        if isinstance(value, date) and not hasattr(value, "hour"):
            return value
        raise ConfigError(path, key, f"must be a date such as 2026-12-25, not {value!r}")
    raise AssertionError(f"unsupported settings type {hint}")  # pragma: no cover


def _join(prefix: str, key: str) -> str:
    # Keys come from the file: show control characters escaped, so the error stays one line
    # and cannot drive the terminal.
    shown = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
    return f"{prefix}.{shown}" if prefix else shown


_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _check_semantics(settings: Settings) -> None:
    """Rules across keys or about values that a type alone cannot express."""
    src = settings.source

    def need(ok: bool, key: str, problem: str) -> None:
        if not ok:
            raise ConfigError(src, key, problem)

    for section in ("imap", "smtp"):
        part = getattr(settings, section)
        need(bool(part.host.strip()), f"{section}.host", "must not be empty")
        need(1 <= part.port <= 65535, f"{section}.port", f"must be between 1 and 65535, not {part.port}")
        need(
            not (part.password_env and part.password_file),
            f"{section}.password_file",
            "set either password_env or password_file, not both",
        )
        need(part.ca_file == "" or Path(part.ca_file).is_file(), f"{section}.ca_file", "file not found")
    need(bool(settings.imap.username), "imap.username", "must not be empty")
    need(
        bool(settings.imap.password_env or settings.imap.password_file),
        "imap.password_env",
        "the IMAP password must come from password_env or password_file",
    )
    need(
        not (settings.smtp.username and not (settings.smtp.password_env or settings.smtp.password_file)),
        "smtp.password_env",
        "smtp.username is set, so the password must come from password_env or password_file",
    )
    need(bool(settings.imap.folder), "imap.folder", "must not be empty")
    need(1 <= settings.imap.batch_size <= 5000, "imap.batch_size", "must be between 1 and 5000")
    need(settings.imap.max_message_bytes >= 1024, "imap.max_message_bytes", "must be at least 1024")
    for key in ("imap.connect_timeout_seconds", "imap.read_timeout_seconds", "smtp.timeout_seconds",
                "smtp.data_timeout_seconds"):
        section, name = key.split(".")
        value = getattr(getattr(settings, section), name)
        need(0 < value <= 3600, key, f"must be above 0 and at most 3600 seconds, not {value}")
    need(settings.imap.max_message_bytes <= 2**31, "imap.max_message_bytes", "must be at most 2 GiB")
    # RFC 2177: servers may drop an IDLE after 30 minutes, so it must be renewed before that.
    need(0 < settings.imap.idle_refresh_minutes <= 29, "imap.idle_refresh_minutes", "must be above 0 and at most 29")
    need(settings.smtp.timeout_seconds > 0, "smtp.timeout_seconds", "must be positive")
    need(
        settings.imap.processed_action != "move" or bool(settings.imap.processed_folder),
        "imap.processed_folder",
        'must name a folder when processed_action is "move"',
    )
    need(bool(_ADDRESS.match(settings.support.address)), "support.address", "must be an email address")
    need(bool(_ADDRESS.match(settings.smtp.from_address)), "smtp.from_address", "must be an email address")
    need(
        settings.smtp.envelope_sender == "" or bool(_ADDRESS.match(settings.smtp.envelope_sender)),
        "smtp.envelope_sender",
        "must be empty (null sender) or an email address",
    )
    need(
        bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,9}", settings.support.reference_prefix)),
        "support.reference_prefix",
        "must be 1 to 10 letters or digits, starting with a letter",
    )
    # Upper bounds keep every value inside what the clock arithmetic can hold.
    for key, high in (("schedule.poll_interval_seconds", 86_400), ("outbox.max_attempts", 1000),
                      ("outbox.first_retry_seconds", 86_400), ("outbox.give_up_after_hours", 8760),
                      ("workers.parse_timeout_seconds", 3600)):
        section, name = key.split(".")
        value = getattr(getattr(settings, section), name)
        need(value >= 1, key, "must be at least 1")
        need(value <= high, key, f"must be at most {high}")
    _check_database_url(settings.database.url, need)
    need(1 <= settings.smtp.connections <= 16, "smtp.connections", "must be between 1 and 16")
    need(0 <= settings.workers.parser_processes <= 16, "workers.parser_processes", "must be between 0 and 16")
    need(settings.workers.parser_memory_mb == 0 or 256 <= settings.workers.parser_memory_mb <= 1_048_576,
         "workers.parser_memory_mb", "must be 0 (no limit) or between 256 and 1048576")
    need(0 <= settings.attachments.max_bytes_per_message <= 2**31, "attachments.max_bytes_per_message",
         "must be between 0 and 2 GiB")
    need(bool(settings.urgency.markers), "urgency.markers", "must name at least one marker")
    for i, marker in enumerate(settings.urgency.markers):
        need(bool(marker.strip()), f"urgency.markers[{i}]", "must not be empty")
    try:
        ZoneInfo(settings.calendar.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            src, "calendar.timezone", f"unknown time zone {settings.calendar.timezone!r}"
        ) from None
    need(bool(settings.calendar.working_days), "calendar.working_days", "must name at least one day")
    for i, day in enumerate(settings.calendar.working_days):
        need(
            day in WEEKDAY_NAMES, f"calendar.working_days[{i}]", f"must be one of {', '.join(WEEKDAY_NAMES)}"
        )
    for i, limit in enumerate(settings.acknowledgement.rate_limits):
        need(
            limit.acknowledgements >= 1,
            f"acknowledgement.rate_limits[{i}].acknowledgements",
            "must be at least 1",
        )
        need(1 <= limit.minutes <= 525_600, f"acknowledgement.rate_limits[{i}].minutes",
             "must be between 1 and 525600 (a year)")
    for i, phone in enumerate(settings.escalation.phones):
        need(bool(phone.number.strip()), f"escalation.phones[{i}].number", "must not be empty")
    _check_policy(settings, need)


def _check_database_url(url: str, need: Callable[[bool, str, str], None]) -> None:
    """The URL parses and names a backend whose driver is installed: found at load, not at
    the first message."""
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except ArgumentError:
        need(False, "database.url", "is not a database URL such as sqlite:///tickets.sqlite3")
    except NoSuchModuleError:
        need(False, "database.url", f"unknown database backend in {url.split(':', 1)[0]!r}")
    except ImportError as exc:
        need(False, "database.url", f"the driver for this URL is not installed ({exc.name or exc})")


def parse_duration(text: str) -> timedelta:
    """"15m", "1h", "1h30m", "24h", "3d" (a day is 24 hours); raises ValueError."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise ValueError(f'must be a duration such as "15m", "1h", "24h" or "3d", not {text!r}')
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    try:
        duration = timedelta(days=days, hours=hours, minutes=minutes)
    except OverflowError:
        duration = _MAX_DURATION * 2
    if duration > _MAX_DURATION:
        raise ValueError(f"must be at most {_MAX_DURATION.days} days, not {text!r}")
    return duration


def parse_clock_time(text: str) -> time | None:
    """"09:00" as a time; "24:00" (the end of the day) as None; raises ValueError."""
    match = re.fullmatch(r"([01]\d|2[0-4]):([0-5]\d)", text.strip())
    if match is None or (match.group(1) == "24" and match.group(2) != "00"):
        raise ValueError(f'must be a local time "HH:MM" from "00:00" to "24:00", not {text!r}')
    if match.group(1) == "24":
        return None
    return time(int(match.group(1)), int(match.group(2)))


def database_url(settings: Settings) -> str:
    """``database.url``, with a relative SQLite file name taken from the config file's folder
    (as every other file name in the config is), not from whatever folder the command runs in."""
    url = settings.database.url
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # refused at load; callers never see it
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        return url
    if Path(name).is_absolute():
        return url
    return parsed.set(database=str(config_dir(settings) / name)).render_as_string(hide_password=False)


def config_dir(settings: Settings) -> Path:
    """The folder relative file names in the config are taken from: the config file's own."""
    if settings.source.startswith("<"):
        return Path.cwd()
    return Path(settings.source).resolve().parent


_MAX_DURATION = timedelta(days=3650)
_DURATION = re.compile(r"(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?")


def _check_policy(settings: Settings, need: Callable[[bool, str, str], None]) -> None:
    """The service-level policy: targets, calendar, request type rules, templates, staff, watcher."""
    src = settings.source
    for fld in dataclasses.fields(TargetSettings):
        target: TargetSetting = getattr(settings.targets, fld.name)
        key = f"targets.{fld.name}.within"
        duration = _duration_or_error(src, key, target.within)
        need(duration >= timedelta(minutes=1), key, "must be at least one minute")
        # Days on the business clock would be ambiguous (24 open hours, or one working day?).
        need(
            target.clock != "business" or "d" not in target.within.lower(),
            key,
            'on the business clock a target counts open hours: write hours, e.g. "24h"',
        )
    cal = settings.calendar
    for day in WEEKDAY_NAMES:
        key = f"calendar.opening_hours.{day}"
        times = getattr(cal.opening_hours, day)
        if not times:
            continue
        need(day in cal.working_days, key, f"{day} is not one of calendar.working_days")
        need(len(times) % 2 == 0, key, 'must be pairs of opening and closing times, e.g. ["09:00", "17:30"]')
        minutes = []
        for i, text in enumerate(times):
            try:
                parsed = parse_clock_time(text)
            except ValueError as exc:
                raise ConfigError(src, f"{key}[{i}]", str(exc)) from None
            minutes.append(24 * 60 if parsed is None else parsed.hour * 60 + parsed.minute)
        need(all(a < b for a, b in zip(minutes, minutes[1:])), key, "times must rise through the day")
    need(not (cal.holiday_subdivision and not cal.holiday_country), "calendar.holiday_subdivision",
         "needs calendar.holiday_country")
    if cal.holiday_country:
        # Imported only when asked for: the holidays package takes a tenth of a second to load.
        from .public_holidays import region_problem

        problem = region_problem(cal.holiday_country, cal.holiday_subdivision)
        subdivision = problem.startswith("unknown subdivision")
        key = "calendar.holiday_subdivision" if subdivision else "calendar.holiday_country"
        need(not problem, key, problem)
    names: set[str] = set()
    for i, rule in enumerate(settings.request_types.rules):
        key = f"request_types.rules[{i}]"
        need(bool(rule.name.strip()), f"{key}.name", "must not be empty")
        need(rule.name not in names, f"{key}.name", f"another rule is already called {rule.name!r}")
        names.add(rule.name)
        need(bool(rule.words), f"{key}.words", "must name at least one word or phrase")
        for j, word in enumerate(rule.words):
            need(bool(word.strip()), f"{key}.words[{j}]", "must not be empty")
        need(bool(rule.look_in), f"{key}.look_in", 'must name "subject", "body" or both')
    for i, address in enumerate(settings.staff.addresses):
        need(bool(_ADDRESS.match(address)), f"staff.addresses[{i}]", f"must be an email address, not {address!r}")
    for i, domain in enumerate(settings.staff.domains):
        need(
            bool(re.fullmatch(r"[^@\s]+\.[^@\s]+", domain.strip(". "))),
            f"staff.domains[{i}]",
            f"must be a domain such as \"ticketure.com\", not {domain!r}",
        )
    watcher = settings.watcher
    need(
        watcher.alert_address == "" or bool(_ADDRESS.match(watcher.alert_address)),
        "watcher.alert_address",
        "must be empty (alerts only logged) or an email address",
    )
    need(watcher.interval_seconds >= 1, "watcher.interval_seconds", "must be at least 1")
    for fld in dataclasses.fields(DueSoonSettings):
        _duration_or_error(src, f"watcher.due_soon_before.{fld.name}", getattr(watcher.due_soon_before, fld.name))
    # Read now, so that a template naming an unknown placeholder stops start-up, not a mail.
    load_templates(dataclasses.asdict(settings.templates), config_dir(settings), src)


def _duration_or_error(src: str, key: str, text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(src, key, str(exc)) from None
