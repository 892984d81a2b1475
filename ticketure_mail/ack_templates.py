"""Finds and checks the acknowledgement texts the config names: built-in, or files of the operator's."""

from __future__ import annotations

import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from .errors import ConfigError

# One text per request type, plus the two that answer urgency: a new urgent ticket, and a
# follow-up that raised its ticket to priority 1.
TEMPLATE_NAMES = ("standard", "web_refinement", "product_feedback", "api_request", "urgent", "escalated")

PLACEHOLDERS = frozenset(
    {
        "greeting_name",  # the client's display name, or "there"
        "reference",  # TKT-000042
        "subject",  # the request's subject, on one line
        "priority_label",  # 3 (Normal)
        "request_type_label",  # Standard support
        "due",  # Friday 4 December 2026, 16:00 GMT (Europe/London)
        "target",  # 24 hours of business time / 15 minutes, around the clock
        "business_hours",  # when the business clock runs, in words
        "phone_lines",  # one indented line per escalation phone number
        "markers",  # one of "Urgent", "Urgent-Priority" or "Urgent Priority"
        "urgent_target",  # 15 minutes
        "support_name",  # Ticketure Support
    }
)


def load_templates(configured: Mapping[str, str], base_dir: Path, source: str) -> dict[str, string.Template]:
    """Every acknowledgement text, checked now so that a bad one stops start-up, not a mail.

    ``configured`` maps a template name to a file ("" for the built-in text); a relative file
    is taken from ``base_dir`` (the config file's folder). Raises ConfigError naming
    ``templates.NAME`` and the file.
    """
    return {name: _load(name, configured.get(name, ""), base_dir, source) for name in TEMPLATE_NAMES}


def _load(name: str, configured: str, base_dir: Path, source: str) -> string.Template:
    key = f"templates.{name}"
    if configured:
        path = Path(configured).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        shown = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, key, f"cannot read {shown}: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        shown = f"built-in templates/{name}.txt"
        text = resources.files("ticketure_mail").joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")
    template = string.Template(text)
    if not template.is_valid():
        raise ConfigError(source, key, f"{shown}: a $ that starts no placeholder (write $$ for a dollar sign)")
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        raise ConfigError(
            source,
            key,
            f"{shown}: unknown placeholder {', '.join('$' + u for u in unknown)} "
            f"(known: {', '.join('$' + p for p in sorted(PLACEHOLDERS))})",
        )
    if not text.strip():
        raise ConfigError(source, key, f"{shown}: is empty")
    return template
