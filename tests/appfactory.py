"""Builds the real application pointed at the test servers, as an operator's config would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servers import ImapAccount, SmtpSink

from ticketure_mail.config import Settings, settings_from_dict

PASSWORD_ENV = "TICKETURE_TEST_IMAP_PASSWORD"


def config_table(mailbox: ImapAccount, sink: SmtpSink, db_url: str, password_file: Path,
                 **sections: dict[str, Any]) -> dict[str, Any]:
    """A config for the test servers, as a TOML table; ``sections`` override keys per section."""
    password_file.write_text(mailbox.password + "\n", encoding="utf-8")
    table: dict[str, Any] = {
        "support": {"address": mailbox.address},
        "imap": {
            "host": mailbox.host, "port": mailbox.port, "tls": "none", "username": mailbox.username,
            "password_file": str(password_file), "connect_timeout_seconds": 5.0, "read_timeout_seconds": 10.0,
        },
        "smtp": {"host": sink.host, "port": sink.port, "tls": "none", "from_address": mailbox.address,
                 "timeout_seconds": 10.0},
        "database": {"url": db_url},
        "calendar": {"timezone": "Europe/London"},
    }
    for name, values in sections.items():
        table.setdefault(name, {}).update(values)
    return table


def settings_for(mailbox: ImapAccount, sink: SmtpSink, db_url: str, tmp_path: Path,
                  **sections: dict[str, Any]) -> Settings:
    return settings_from_dict(config_table(mailbox, sink, db_url, tmp_path / "imap-password", **sections),
                              source="<test>")


def toml_text(table: dict[str, Any]) -> str:
    """Just enough TOML for the tables above: sections of strings, numbers, booleans, arrays of
    those, and inline tables."""
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return f'"{value}"'
