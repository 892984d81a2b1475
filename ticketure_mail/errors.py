"""The exception tree: one root, configuration errors apart from operational ones."""

from __future__ import annotations


class TicketureError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(TicketureError):
    """The configuration cannot be used; names the file and the key at fault."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class ParseError(TicketureError):
    """A raw message could not be turned into a ParsedMail at all."""


class TransientError(TicketureError):
    """A server or network fault that may pass: try again later."""


class PermanentError(TicketureError):
    """A fault that will not pass by retrying (a 5xx answer, a refused address)."""


class ImapError(TransientError):
    """The IMAP server could not be reached or stopped answering."""
