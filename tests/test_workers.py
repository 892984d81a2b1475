"""Child processes: parsers and SMTP senders answer as their in-process versions would, and a
child that hangs or dies costs at most the one message it held."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from servers import SmtpSink

from mailfactory import raw_message

from ticketure_mail.config import SmtpSettings
from ticketure_mail.errors import ParseError
from ticketure_mail.model import ParsedMail
from ticketure_mail.parse_workers import ParseWorkers
from ticketure_mail.parsing import parse_mail
from ticketure_mail.smtp_process import ProcessSender
from ticketure_mail.smtp_sender import Envelope, SendStatus, SmtpUnavailable


@pytest.fixture
def parsers():
    workers = ParseWorkers(processes=2, timeout_seconds=2)
    yield workers
    workers.close()


def messages(n: int) -> list[bytes]:
    return [raw_message(message_id=f"<w{i}@example.com>", subject=f"Message {i}") for i in range(n)]


def test_parsed_in_children_as_in_line_and_in_order(parsers: ParseWorkers) -> None:
    raws: list[bytes | None] = [*messages(40), None, b"   ", raw_message(subject="Last")]
    outcomes = list(parsers.parse_all(raws))
    assert len(outcomes) == len(raws)
    for raw, outcome in zip(raws[:40], outcomes[:40]):
        assert outcome == parse_mail(raw)
    assert outcomes[40] is None
    assert isinstance(outcomes[41], ParseError) and "empty" in str(outcomes[41])
    assert isinstance(outcomes[42], ParsedMail) and outcomes[42].subject == "Last"


def test_a_dead_parser_costs_the_message_it_held_and_is_replaced(parsers: ParseWorkers) -> None:
    parsers.start()
    first = parsers._children[0].process
    first.kill()
    first.join()
    outcomes = list(parsers.parse_all(messages(6)))
    # Messages go to the two children in turn: the dead one held the first, and only that one fails.
    assert isinstance(outcomes[0], ParseError) and "ended" in str(outcomes[0])
    assert [o.message_id for o in outcomes[1:]] == [f"w{i}@example.com" for i in range(1, 6)]
    assert parsers._children[0].process.is_alive()


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


def smtp_settings(sink: SmtpSink, **values: object) -> SmtpSettings:
    return SmtpSettings(host=sink.host, port=sink.port, tls="none", timeout_seconds=5.0, **values)  # type: ignore[arg-type]


def test_process_sessions_send_in_parallel_each_on_its_own_child(sink: SmtpSink) -> None:
    sender = ProcessSender(smtp_settings(sink), "")
    results: list[SendStatus] = []

    def one_session(n: int) -> None:
        with sender.session() as session:
            for i in range(5):
                data = raw_message(message_id=f"<s{n}-{i}@example.com>")
                results.append(session.send(Envelope(i, "", f"c{n}-{i}@example.com", data)).status)

    try:
        threads = [threading.Thread(target=one_session, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [SendStatus.SENT] * 10
        assert sorted(m.rcpt_tos[0] for m in sink.wait_for(10)) == sorted(
            f"c{n}-{i}@example.com" for n in range(2) for i in range(5))
        assert len(sender._idle) == 2  # kept for the next sessions
    finally:
        sender.close()


def test_process_session_answers_like_the_relay(sink: SmtpSink) -> None:
    sender = ProcessSender(smtp_settings(sink), "")
    try:
        sink.fail_next(550, stage="rcpt", message="5.1.1 no such user")
        with sender.session() as session:
            refused = session.send(Envelope(1, "", "nobody@example.com", raw_message()))
            sent = session.send(Envelope(2, "", "somebody@example.com", raw_message()))
        assert refused.status == SendStatus.PERMANENT and "550" in refused.detail
        assert sent.status == SendStatus.SENT
    finally:
        sender.close()


def test_relay_down_and_a_killed_child_are_unavailable_then_recover(sink: SmtpSink) -> None:
    down = ProcessSender(SmtpSettings(host="127.0.0.1", port=1, tls="none", timeout_seconds=2.0), "")
    try:
        with down.session() as session, pytest.raises(SmtpUnavailable):
            session.send(Envelope(1, "", "a@example.com", raw_message()))
    finally:
        down.close()
    sender = ProcessSender(smtp_settings(sink), "")
    try:
        with sender.session() as session:
            assert session.send(Envelope(1, "", "a@example.com", raw_message())).status == SendStatus.SENT
            session._child._process.kill()  # type: ignore[union-attr]
            with pytest.raises(SmtpUnavailable, match="sending process ended"):
                session.send(Envelope(2, "", "b@example.com", raw_message()))
        with sender.session() as session:
            assert session.send(Envelope(3, "", "c@example.com", raw_message())).status == SendStatus.SENT
    finally:
        sender.close()
