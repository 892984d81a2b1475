"""ticketure-mail: turns a support mailbox into tickets with response deadlines."""

__version__ = "0.1.0"
