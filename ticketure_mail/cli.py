"""The command line; the only module that prints for people or ends the process."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from . import __version__
from .acknowledgement import PRIORITY_NAMES, format_due
from .app import App, build_app
from .clock import Clock, SystemClock, as_utc, iso_utc
from .config import CONFIG_ENV_VAR, database_url, find_config_path, load_settings, read_secret
from .decisions import Source
from .errors import ConfigError, ImapError, TicketureError
from .imap_inbox import ImapInbox
from .explain import explain, format_explanation
from .model import Outcome, Priority, RequestType
from .pipeline import StorageUnavailable
from .reporting import TicketTimes, build_report, format_report
from .smtp_sender import SmtpSender, SmtpUnavailable
from .tables import TicketRow
from .triage import SETTABLE_TYPES, NoSuchTicket, TriageRefused, close, record_response, set_priority, set_type

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL

log = logging.getLogger("ticketure_mail")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticketure-mail",
        description="Turns a support mailbox into tickets with response deadlines, and acknowledges each request.",
        epilog=f"The config file is --config PATH, else ${CONFIG_ENV_VAR}, else ./config.toml. "
        "Exit status: 0 success, 1 operational failure, 2 invalid configuration or usage.",
    )
    parser.add_argument("--config", metavar="PATH", help="the TOML config file")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO"
    )
    parser.add_argument("--version", action="version", version=f"ticketure-mail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the daemon: take new mail as IMAP IDLE announces it (and poll on a schedule) "
                   "until SIGTERM or SIGINT")

    poll = sub.add_parser("poll", help="poll the mailbox")
    poll.add_argument("--once", action="store_true", required=True,
                      help="one full cycle: fetch and process all new mail, send the queued mail, exit")

    ingest = sub.add_parser("ingest", help="process one raw message from a file or standard input (pipe delivery)")
    ingest.add_argument("file", metavar="FILE|-", help="the raw RFC 5322 message; - reads standard input")
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.add_argument("--received-at", metavar="ISO8601", type=_time_argument,
                        help="the arrival time (default: now)")

    tickets = sub.add_parser("tickets", help="show stored tickets and triage them")
    tsub = tickets.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    tlist = tsub.add_parser("list", help="tickets, one line each; the filters combine")
    tlist.add_argument("--json", action="store_true")
    tlist.add_argument("--overdue", action="store_true",
                       help="only open tickets past their deadline with no first response")
    tlist.add_argument("--priority", type=int, choices=[1, 2, 3, 4], metavar="N", help="only priority N (1-4)")
    tlist.add_argument("--type", choices=[t.value for t in RequestType], metavar="TYPE",
                       help=f"only this request type ({', '.join(t.value for t in RequestType)})")
    tlist.add_argument("--status", choices=["open", "closed"], help="only open or only closed tickets")
    tshow = tsub.add_parser("show", help="one ticket with its messages and history")
    tshow.add_argument("reference")
    tshow.add_argument("--json", action="store_true")
    by_help = "who made the change (default: the operating-system user)"
    tprio = tsub.add_parser("set-priority", help="decide the priority; the deadline is counted again from the arrival")
    tprio.add_argument("reference")
    tprio.add_argument("priority", type=int, choices=[1, 2, 3, 4], metavar="N",
                       help="1 Urgent, 2 High, 3 Normal, 4 Low")
    tprio.add_argument("--by", metavar="NAME", help=by_help)
    ttype = tsub.add_parser("set-type", help="correct the request type")
    ttype.add_argument("reference")
    ttype.add_argument("type", choices=SETTABLE_TYPES, metavar="TYPE", help=", ".join(SETTABLE_TYPES))
    ttype.add_argument("--by", metavar="NAME", help=by_help)
    tresp = tsub.add_parser("respond", help="record a first response given another way (phone, chat): stops the clock")
    tresp.add_argument("reference")
    tresp.add_argument("--by", metavar="NAME", help=by_help)
    tresp.add_argument("--at", metavar="ISO8601", type=_time_argument,
                       help="when it was given (default: now; not in the future)")
    tclose = tsub.add_parser("close", help="close a ticket: no more deadline alerts (the client writing again reopens it)")
    tclose.add_argument("reference")
    tclose.add_argument("--by", metavar="NAME", help=by_help)

    report = sub.add_parser("report", help="first responses per priority and request type: met, median, p90, overdue")
    report.set_defaults(command_parser=report)  # so that a bad --since shows report's usage
    report.add_argument("--since", metavar="DATE", help="only tickets received since this date (calendar time zone) "
                        "or ISO 8601 time; default: all")
    report.add_argument("--json", action="store_true")

    explain_cmd = sub.add_parser("explain",
                                 help="what the daemon would do with a message, and why; stores and sends nothing")
    explain_cmd.add_argument("file", metavar="FILE.eml|-", help="the raw RFC 5322 message; - reads standard input")
    explain_cmd.add_argument("--json", action="store_true")
    explain_cmd.add_argument("--received-at", metavar="ISO8601", type=_time_argument,
                             help="the arrival time (default: now)")

    outbox = sub.add_parser("outbox", help="mail waiting to be sent, or that failed")
    osub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    olist = osub.add_parser("list", help="pending and failed mail")
    olist.add_argument("--json", action="store_true")
    oretry = osub.add_parser("retry", help="queue a failed message again")
    oretry.add_argument("id", type=_row_id)

    quarantine = sub.add_parser("quarantine", help="messages that could not be processed")
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    qlist = qsub.add_parser("list", help="messages held in quarantine")
    qlist.add_argument("--json", action="store_true")
    qretry = qsub.add_parser("retry", help="process held messages again")
    qretry.add_argument("id", metavar="ID|all")

    sub.add_parser("check-config", help="validate the config, log in to IMAP and SMTP and open the database")
    return parser


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    """Run one command; ``clock`` replaces the system clock (replays, tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    path = find_config_path(args.config)
    try:
        settings = load_settings(path)
        if args.command == "check-config":
            return _check_config(settings)
        try:
            app = build_app(settings, clock or SystemClock())
        except SQLAlchemyError as exc:
            return _database_unavailable(args, exc, database_url(settings))
        try:
            if getattr(args, "since", None):
                try:
                    args.since = _parse_since(args.since, settings.timezone)
                except ValueError as exc:
                    args.command_parser.error(f"argument --since: {exc}")
            return _dispatch(app, args)
        finally:
            app.close()
    except ConfigError as exc:
        print(f"ticketure-mail: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BrokenPipeError:
        # The reader went away (`tickets show X | head`): say nothing, and keep Python from
        # complaining again when it flushes standard output at exit.
        _silence_stdout()
        return EXIT_FAILURE
    except (TicketureError, OSError) as exc:
        print(f"ticketure-mail: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except SQLAlchemyError as exc:
        return _database_unavailable(args, exc)
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _database_unavailable(args: argparse.Namespace, exc: BaseException, url: str = "") -> int:
    """One line, no traceback. For ingest, EX_TEMPFAIL: the mail server keeps the message and
    delivers it again later, where a plain failure would bounce it to the client."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    # SQLite's "unable to open database file" does not say which file.
    where = f" ({url.removeprefix('sqlite:///')})" if url.startswith("sqlite:///") else ""
    print(f"ticketure-mail: database unavailable{where}: {orig.__class__.__name__}: {first}"[:600], file=sys.stderr)
    return EXIT_TEMPFAIL if args.command == "ingest" else EXIT_FAILURE


def _dispatch(app: App, args: argparse.Namespace) -> int:
    if args.command == "run":
        from .daemon import run_daemon

        run_daemon(app)
        return EXIT_OK
    if args.command == "poll":
        return _poll_once(app)
    if args.command == "ingest":
        return _ingest(app, args)
    if args.command == "tickets":
        return _tickets(app, args)
    if args.command == "outbox":
        return _outbox(app, args)
    if args.command == "quarantine":
        return _quarantine(app, args)
    if args.command == "report":
        return _report(app, args)
    if args.command == "explain":
        return _explain(app, args)
    raise AssertionError(args.command)  # pragma: no cover - argparse allows no other


def _poll_once(app: App) -> int:
    poller = app.poller()
    try:
        report = poller.cycle()
    finally:
        poller.close()
    d = report.delivery
    print(
        f"processed {report.processed} message(s){f' ({report.outcome_counts()})' if report.outcomes else ''}; "
        f"sent {d.sent}, retrying {d.retrying}, failed {d.failed}"
    )
    problems = [p for p in (report.imap_error, report.storage_error, *(d.errors[:1] if d.unavailable else [])) if p]
    # Deadlines are checked after the mail is in (a staff reply just read stops a clock), and
    # the alerts raised go out in this same run.
    watch = app.watcher().run()
    if watch.raised:
        sent = app.delivery().deliver_due()
        print(f"deadline alerts: {watch.due_soon} due soon, {watch.breached} breached; sent {sent.sent}")
    if watch.error:
        problems.append(watch.error)
    for problem in problems:
        print(f"ticketure-mail: {problem}", file=sys.stderr)
    return EXIT_FAILURE if problems else EXIT_OK


def _ingest(app: App, args: argparse.Namespace) -> int:
    if args.file == "-":
        raw = sys.stdin.buffer.read()
    else:
        raw = Path(args.file).read_bytes()
    try:
        result = app.processor.process(raw, Source("ingest"), args.received_at, app.parse_guarded(raw))
    except StorageUnavailable as exc:
        # A pipe delivery should be retried by the mail server: temporary failure (EX_TEMPFAIL).
        print(f"ticketure-mail: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        ticket = f" {result.ticket}" if result.ticket else ""
        due = f" due {format_due(result.due_at, app.settings.timezone)}" if result.due_at else ""
        reason = f" ({result.reason})" if result.reason else ""
        ack = " ack queued" if result.ack else ""
        print(f"{result.outcome.value}{ticket}{due}{ack}{reason}")
    return EXIT_OK


def _tickets(app: App, args: argparse.Namespace) -> int:
    zone = app.settings.timezone
    now = app.clock.now()
    if args.tickets_command == "list":
        rows = app.store.find_tickets(
            status=args.status,
            priority=args.priority,
            request_type=args.type,
            overdue_at=now if args.overdue else None,
        )
        if args.json:
            print(json.dumps([_ticket_json(t, now) for t in rows], ensure_ascii=False, indent=2))
            return EXIT_OK
        if not rows:
            print("no tickets" + (" match" if args.status or args.priority or args.type or args.overdue else ""))
        for t in rows:
            print(f"{t.reference}  P{t.priority}  {t.request_type:<16}  {t.status:<6}  {_clock_state(t, now):<9}  "
                  f"due {format_due(t.due_at, zone)}  {t.requester}  {t.subject or '(no subject)'}")
        return EXIT_OK
    if args.tickets_command != "show":
        return _triage(app, args, now)
    ticket = app.store.ticket(args.reference)
    if ticket is None or ticket.id is None:
        print(f"ticketure-mail: no ticket {args.reference}", file=sys.stderr)
        return EXIT_FAILURE
    messages = app.store.ticket_messages(ticket.id)
    events = app.store.ticket_events(ticket.id)
    if args.json:
        data = _ticket_json(ticket, now)
        data["history"] = [{"at": _iso(e.at), "by": e.by, "action": e.action, "detail": e.detail} for e in events]
        data["messages"] = [
            {
                "direction": m.direction,
                "kind": m.kind,
                "message_id": m.message_id,
                "from": m.from_address,
                "subject": m.subject,
                "received_at": _iso(m.received_at),
                "body_text": m.body_text,
                "attachments": [{"filename": a.filename, "content_type": a.content_type, "size": a.size}
                                for a in files],
            }
            for m, files in messages
        ]
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"{ticket.reference}: {ticket.subject or '(no subject)'}")
    requester = f"{ticket.requester_name} <{ticket.requester}>" if ticket.requester_name else ticket.requester
    print(f"  requester:    {requester}")
    print(f"  priority:     {ticket.priority} ({PRIORITY_NAMES[ticket.priority]})")
    if ticket.priority_set_at is not None:
        print(f"                set by {ticket.priority_set_by} at {format_due(ticket.priority_set_at, zone)}")
    rule = f" (rule {ticket.type_rule})" if ticket.type_rule else ""
    print(f"  request type: {ticket.request_type}{rule}")
    since = f" since {format_due(ticket.closed_at, zone)}" if ticket.closed_at else ""
    print(f"  status:       {ticket.status}{since}")
    print(f"  received:     {format_due(ticket.received_at, zone)}")
    print(f"  due:          {format_due(ticket.due_at, zone)}  [{_clock_state(ticket, now)}]")
    if ticket.first_response_at is not None:
        print(f"  responded:    {format_due(ticket.first_response_at, zone)} by {ticket.first_response_by or '?'}")
    for e in events:
        print(f"  history:      {_iso(e.at)}  {e.action} by {e.by}: {e.detail}")
    print(f"  messages:     {len(messages)}")
    for m, files in messages:
        arrow = "<-" if m.direction == "inbound" else "->"
        names = f"  [{', '.join(a.filename for a in files)}]" if files else ""
        print(f"    {arrow} {m.kind:<15} {_iso(m.received_at)}  {m.from_address or 'us'}  {m.subject}{names}")
    return EXIT_OK


def _outbox(app: App, args: argparse.Namespace) -> int:
    if args.outbox_command == "retry":
        if app.store.requeue_outbox(args.id, app.clock.now()):
            print(f"outbox {args.id} queued again")
            return EXIT_OK
        print(f"ticketure-mail: no failed outbox message {args.id} (see 'outbox list')", file=sys.stderr)
        return EXIT_FAILURE
    items = app.store.outbox_items()
    if args.json:
        print(json.dumps([
            {"id": i.id, "status": i.status, "kind": i.kind, "recipient": i.recipient, "subject": i.subject,
             "attempts": i.attempts, "next_attempt_at": _iso(i.next_attempt_at), "last_error": i.last_error,
             "message_id": i.message_id}
            for i in items
        ], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not items:
        print("outbox empty: nothing pending or failed")
    for i in items:
        error = f"  last error: {i.last_error}" if i.last_error else ""
        print(f"{i.id:>6}  {i.status:<8} attempts {i.attempts}  to {i.recipient}  {i.subject}{error}")
    return EXIT_OK


def _quarantine(app: App, args: argparse.Namespace) -> int:
    rows = app.store.held_quarantine()
    if args.quarantine_command == "list":
        if args.json:
            print(json.dumps([
                {"id": r.id, "source": r.source, "uid": r.uid, "message_id": r.message_id, "subject": r.subject,
                 "from": r.from_address, "reason": r.reason, "size": r.size, "created_at": _iso(r.created_at),
                 "retryable": r.raw is not None}
                for r in rows
            ], ensure_ascii=False, indent=2))
            return EXIT_OK
        if not rows:
            print("quarantine empty")
        for r in rows:
            print(f"{r.id:>6}  {r.source}  from {r.from_address or '(no sender)'}  {r.subject or '(no subject)'}  reason: {r.reason}")
        return EXIT_OK
    if args.id != "all":
        if not (args.id.isascii() and args.id.isdigit()) or int(args.id) > _MAX_ROW_ID:
            print("ticketure-mail: quarantine retry takes an ID from 'quarantine list' or 'all'", file=sys.stderr)
            return EXIT_CONFIG
        rows = [r for r in rows if r.id == int(args.id)]
        if not rows:
            print(f"ticketure-mail: no held quarantine entry {args.id}", file=sys.stderr)
            return EXIT_FAILURE
    status = EXIT_OK
    for r in rows:
        assert r.id is not None
        if r.raw is None:
            print(f"{r.id}: the message is kept only on the IMAP server ({app.settings.imap.quarantine_folder!r}); "
                  "raise imap.max_message_bytes and move it back to the inbox folder")
            status = EXIT_FAILURE
            continue
        result = app.processor.process(r.raw, Source("quarantine", quarantine_id=r.id), r.received_at,
                                       app.parse_guarded(r.raw))
        if result.outcome == Outcome.QUARANTINED:
            # Held again under the same entry, with the new reason.
            print(f"{r.id}: still quarantined ({result.reason})")
            status = EXIT_FAILURE
            continue
        app.store.release_quarantine(r.id, app.clock.now())
        print(f"{r.id}: {result.outcome.value}{' ' + result.ticket if result.ticket else ''}"
              f"{' (' + result.reason + ')' if result.reason else ''}")
    return status


def _check_config(settings: Any) -> int:
    imap_password, smtp_password = read_secret(settings, "imap"), read_secret(settings, "smtp")
    print(f"config {settings.source}: valid")
    ok = True
    inbox = ImapInbox(settings.imap, imap_password)
    try:
        inbox.connect()
        print(f"imap: ok: logged in to {settings.imap.host}:{settings.imap.port} as {settings.imap.username}; "
              f"{inbox.check()}")
    except ImapError as exc:
        print(f"imap: FAILED: {exc}")
        ok = False
    finally:
        inbox.close()
    try:
        print(f"smtp: ok: {SmtpSender(settings.smtp, smtp_password).check()}")
    except SmtpUnavailable as exc:
        print(f"smtp: FAILED: {exc}")
        ok = False
    try:
        app = build_app(settings)
        counts = app.store.counts()
        app.close()
        print(f"database: ok: {counts['tickets']} tickets, {counts['outbox_pending']} pending, "
              f"{counts['quarantined']} quarantined")
    except Exception as exc:  # any driver error is a failed check, reported in one line
        print(f"database: FAILED: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        ok = False
    return EXIT_OK if ok else EXIT_FAILURE


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Third-party loggers that print message content or protocol traffic stay quiet.
    # (parsing.py holds mailparser at CRITICAL: at ERROR it logs raw header values.)
    for noisy in ("imapclient", "aiosmtplib", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


_MAX_ROW_ID = 2**63 - 1  # the largest id either database can hold


def _row_id(text: str) -> int:
    """An id from a list command: a positive whole number the database can hold."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"not an id from the list: {text!r}")
    return int(text)


def _time_argument(text: str) -> datetime:
    """An ISO 8601 time argument; argparse reports a bad one with its own command's usage."""
    try:
        return _parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"needs a time zone (e.g. 2026-12-03T09:00:00Z): {text!r}")
    try:
        return as_utc(value)
    except OverflowError:
        raise ValueError(f"out of range: {text!r}") from None


def _ticket_json(t: TicketRow, now: datetime) -> dict[str, Any]:
    return {
        "reference": t.reference, "subject": t.subject, "requester": t.requester,
        "requester_name": t.requester_name, "priority": t.priority, "request_type": t.request_type,
        "type_rule": t.type_rule, "status": t.status, "urgency_marker": t.urgency_marker,
        "received_at": _iso(t.received_at), "due_at": _iso(t.due_at), "created_at": _iso(t.created_at),
        "priority_set_by": t.priority_set_by, "priority_set_at": _iso(t.priority_set_at),
        "first_response_at": _iso(t.first_response_at), "first_response_by": t.first_response_by,
        "closed_at": _iso(t.closed_at), "overdue": _clock_state(t, now) == "OVERDUE",
    }


def _clock_state(t: TicketRow, now: datetime) -> str:
    """Where the response clock stands: answered, stopped (closed unanswered), OVERDUE or running."""
    if t.first_response_at is not None:
        return "answered"
    if t.status != "open":
        return "stopped"
    return "OVERDUE" if t.due_at < now else "running"


def _triage(app: App, args: argparse.Namespace, now: datetime) -> int:
    by = args.by or _os_user()
    zone = app.settings.timezone
    policy = app.processor.policy
    try:
        if args.tickets_command == "set-priority":
            done = set_priority(app.store, policy, args.reference, Priority(args.priority), by, now)
            said = f"priority {done.ticket.priority}, due {format_due(done.ticket.due_at, zone)}"
        elif args.tickets_command == "set-type":
            done = set_type(app.store, policy, args.reference, RequestType(args.type), by, now)
            said = f"request type {done.ticket.request_type}, due {format_due(done.ticket.due_at, zone)}"
        elif args.tickets_command == "respond":
            done = record_response(app.store, args.reference, by, args.at or now, now)
            assert done.ticket.first_response_at is not None
            responded = format_due(done.ticket.first_response_at, zone)
            said = f"first response {responded} by {done.ticket.first_response_by}"
        else:
            done = close(app.store, args.reference, by, now)
            said = "closed"
    except NoSuchTicket:
        print(f"ticketure-mail: no ticket {args.reference}", file=sys.stderr)
        return EXIT_FAILURE
    except TriageRefused as exc:
        print(f"ticketure-mail: {args.reference}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{done.ticket.reference}: {said}" + ("" if done.changed else " (unchanged)"))
    return EXIT_OK


def _report(app: App, args: argparse.Namespace) -> int:
    now = app.clock.now()
    rows = app.store.find_tickets(received_since=args.since)
    report = build_report(
        (TicketTimes(t.priority, t.request_type, t.received_at, t.due_at, t.first_response_at, t.status) for t in rows),
        now,
    )
    if args.json:
        print(json.dumps({
            "since": _iso(args.since), "as_of": _iso(now), "total": report.total.as_json(),
            "by_priority": [g.as_json() for g in report.by_priority],
            "by_type": [g.as_json() for g in report.by_type],
        }, ensure_ascii=False, indent=2))
        return EXIT_OK
    zone = app.settings.timezone
    since = f"received since {format_due(args.since, zone)}" if args.since else "all tickets"
    print(format_report(report, f"First responses, {since}; as of {format_due(now, zone)}"))
    return EXIT_OK


def _explain(app: App, args: argparse.Namespace) -> int:
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    now = app.clock.now()
    found = explain(app.processor, raw, args.received_at or now, now, app.parse_guarded(raw))
    if args.json:
        print(json.dumps(found.as_json(), ensure_ascii=False, indent=2))
    else:
        print(format_explanation(found))
    return EXIT_OK


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _parse_since(text: str, zone: Any) -> datetime:
    """A date is the start of that day in the calendar's time zone; a time needs its zone."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return _parse_time(text)
    return as_utc(datetime.combine(day, time(0, 0), tzinfo=zone))


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (embedded, tests)
        pass


def _iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value else None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
