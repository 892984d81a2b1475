"""Starts a child process that runs one function of this package, connected by a socket pair.

multiprocessing's "spawn" runs the parent's main module again in every child, and here that
module is the whole daemon (SQLAlchemy, the scheduler, the IMAP client): 60 MB per child that
needs a fraction of it. A child started here imports only the module of its function.
"""

from __future__ import annotations

import importlib
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection


def start(target: str) -> tuple[subprocess.Popen[bytes], Connection]:
    """Run ``module:function`` in a new interpreter; the function gets the child's end of the
    connection, the caller the other. The child ignores Ctrl-C: its parent decides when it stops."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, target, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    return process, Connection(ours.detach())


def _main(argv: list[str]) -> None:
    target, fd = argv
    module, _, function = target.partition(":")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(int(fd))
    try:
        getattr(importlib.import_module(module), function)(connection)
    finally:
        connection.close()


if __name__ == "__main__":
    _main(sys.argv[1:])
