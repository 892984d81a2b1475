"""Starts a child process that runs one function of this package, connected by a socket pair.

multiprocessing's "spawn" runs the parent's main module again in every child, and here that
module is the whole daemon (SQLAlchemy, the scheduler, the IMAP client): 60 MB per child that
needs a fraction of it. A child started here imports only the module of its function.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import resource
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection


def start(target: str, memory_limit_bytes: int = 0) -> tuple[subprocess.Popen[bytes], Connection]:
    """Run ``module:function`` in a new interpreter; the function gets the child's end of the
    connection, the caller the other. The child ignores Ctrl-C: its parent decides when it stops.
    With ``memory_limit_bytes``, the child's address space is capped there: past it an
    allocation raises MemoryError in the child, rather than the kernel's OOM killer choosing a
    process to end, which may be the daemon."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, target, str(theirs.fileno()), str(os.getpid()), str(memory_limit_bytes)],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    return process, Connection(ours.detach())


def _main(argv: list[str]) -> None:
    target, fd, parent, memory_limit = argv
    _end_with_parent(int(parent))
    if int(memory_limit) > 0:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory_limit), int(memory_limit)))
    module, _, function = target.partition(":")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(int(fd))
    try:
        getattr(importlib.import_module(module), function)(connection)
    finally:
        connection.close()


def _end_with_parent(parent: int) -> None:
    """Be killed when the parent dies, however it dies: a daemon ended by kill -9 must not leave
    a child spinning on a message that hangs the parser. Linux only (prctl); elsewhere the
    child still ends when its socket closes, once it is back to reading."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


_PR_SET_PDEATHSIG = 1


if __name__ == "__main__":
    _main(sys.argv[1:])
