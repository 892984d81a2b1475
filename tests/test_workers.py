"""Parser processes: they answer as parsing in line would, and a parser that hangs or dies
costs at most the one message it held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailfactory import raw_message, slow_to_parse

from ticketure_mail.errors import ParseError
from ticketure_mail.model import ParsedMail
from ticketure_mail.parse_workers import ParseWorkers
from ticketure_mail.parsing import parse_mail


@pytest.fixture
def parsers():
    workers = ParseWorkers(processes=2, timeout_seconds=2)
    yield workers
    workers.close()


def messages(n: int) -> list[bytes]:
    return [raw_message(message_id=f"<w{i}@example.com>", subject=f"Message {i}") for i in range(n)]


def test_parsed_in_children_as_in_line_and_in_order(parsers: ParseWorkers) -> None:
    raws: list[bytes | None] = [*messages(40), None, b"   ", raw_message(subject="Last"), b""]
    outcomes = list(parsers.parse_all(raws))
    assert len(outcomes) == len(raws)
    for raw, outcome in zip(raws[:40], outcomes[:40]):
        assert outcome == parse_mail(raw)
    assert outcomes[40] is None
    assert isinstance(outcomes[41], ParseError) and "empty" in str(outcomes[41])
    assert isinstance(outcomes[42], ParsedMail) and outcomes[42].subject == "Last"
    assert isinstance(outcomes[43], ParseError) and "empty" in str(outcomes[43])


def test_a_dead_parser_costs_the_message_it_held_and_is_replaced(parsers: ParseWorkers) -> None:
    parsers.start()
    first = parsers._children[0].process
    first.kill()
    first.wait()
    outcomes = list(parsers.parse_all(messages(6)))
    # Messages go to the two children in turn: the dead one held the first, and only that one fails.
    assert isinstance(outcomes[0], ParseError) and "ended" in str(outcomes[0])
    assert [o.message_id for o in outcomes[1:]] == [f"w{i}@example.com" for i in range(1, 6)]
    assert parsers._children[0].alive


def test_a_parser_that_hangs_is_given_up_after_the_timeout_and_replaced(parsers: ParseWorkers) -> None:
    parsers.start()
    os.kill(parsers._children[1].process.pid, signal.SIGSTOP)
    outcomes = list(parsers.parse_all(messages(4)))
    assert isinstance(outcomes[1], ParseError) and "took longer" in str(outcomes[1])
    assert [o.message_id for i, o in enumerate(outcomes) if i != 1] == ["w0@example.com", "w2@example.com",
                                                                         "w3@example.com"]


def test_leaving_the_loop_early_leaves_the_parsers_ready(parsers: ParseWorkers) -> None:
    for outcome in parsers.parse_all(messages(30)):
        assert isinstance(outcome, ParsedMail)
        break
    again = list(parsers.parse_all(messages(3)))
    assert [o.message_id for o in again] == ["w0@example.com", "w1@example.com", "w2@example.com"]


def test_the_daemon_process_does_not_load_the_parser_nor_alembic() -> None:
    # With parser processes (the default) the parser lives only in the children: importing
    # it in the daemon too would cost its memory twice. Alembic (11 MB) is needed only to
    # upgrade an older database (see schema.py).
    code = ("import sys, ticketure_mail.cli, ticketure_mail.daemon; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mailparser', 'tnefparse', 'alembic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_parser_dies_with_its_daemon_even_by_kill_9(tmp_path: Path) -> None:
    # A parser stuck on a message would otherwise spin on after its daemon, for hours.
    # One message parsed first: the child is past its start-up and serving.
    code = ("import sys, time; from ticketure_mail.parse_workers import ParseWorkers; "
            "w = ParseWorkers(1, 5); list(w.parse_all([b'Subject: hi\\r\\n\\r\\nbody\\r\\n'])); "
            "print(w._children[0].process.pid, flush=True); time.sleep(60)")
    daemon = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(daemon.stdout.readline())
        os.kill(child, signal.SIGSTOP)  # as good as stuck: it will not notice its socket closing
        daemon.kill()
        daemon.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.05)
        assert not _running(child)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.stdout.close()
        if _running(child):
            os.kill(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be read


def test_leaving_the_loop_does_not_wait_on_messages_that_hang_the_parser(parsers: ParseWorkers) -> None:
    # A stop asked for while the parsers hold several messages that each hang them: no
    # waiting out the parse timeout (2 s here) once per message held.
    started = time.monotonic()
    outcomes = parsers.parse_all([slow_to_parse(f"slow-{n}@example.org") for n in range(8)])
    first = next(outcomes)
    outcomes.close()  # the caller leaves the loop
    assert isinstance(first, ParseError) and "took longer" in str(first)
    assert time.monotonic() - started < 10  # about 2 s; waiting for each of the others: 16 s
    assert all(child.alive for child in parsers._children)
    assert [o.message_id for o in parsers.parse_all(messages(2))] == ["w0@example.com", "w1@example.com"]


def test_a_message_that_needs_more_memory_than_the_parser_may_have_costs_only_itself() -> None:
    workers = ParseWorkers(processes=1, timeout_seconds=60, memory_limit_bytes=256 * 2**20)
    try:
        list(workers.parse_all(messages(1)))  # the child is past its start-up
        limits = Path(f"/proc/{workers._children[0].process.pid}/limits").read_text()
        [line] = [line for line in limits.splitlines() if line.startswith("Max address space")]
        assert line.split()[3:5] == [str(256 * 2**20)] * 2
        # 300 MB to hold and decode: more than the child may have.
        big = (b"From: a@example.com\r\nMessage-ID: <big@example.com>\r\n\r\n" + b"x" * (300 * 2**20))
        outcomes = list(workers.parse_all([big, raw_message(message_id="<after@example.com>")]))
        assert isinstance(outcomes[0], ParseError)
        assert "MemoryError" in str(outcomes[0]) or "ended" in str(outcomes[0])
        assert isinstance(outcomes[1], ParsedMail) and outcomes[1].message_id == "after@example.com"
    finally:
        workers.close()
