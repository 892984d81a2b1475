"""Measures the real daemon end to end: backlog throughput, peak memory, idle arrival-to-ack latency.

Started by scripts/bench (which prepares .venv first). Each run starts from nothing: a new
mailbox on a private Dovecot filled with N realistic support messages (plain, HTML,
attachments, about 20 % urgent), an empty SMTP sink, an empty SQLite database, and a real
`ticketure-mail run` process with the default settings. It reports:

* throughput: N divided by the time from starting the daemon to the last acknowledgement
  reaching the sink (every ticket stored, every acknowledgement received);
* peak memory: the daemon's VmHWM (peak resident set) from /proc/<pid>/status at the end, and
  the sum of that and the VmHWM of each of its child processes (the parser); as that sum counts
  the pages they share twice, also the peak of their summed PSS (proportional set size, shared
  pages split between the processes that map them), sampled every quarter second; and the
  daemon's own resident size through the backlog, as its highest sample in each fifth of the
  backlog's time, so that memory that grows with the backlog shows as a rising row;
* latency: for single messages appended one at a time into the idle daemon, the time from
  just before the APPEND to the acknowledgement arriving at the sink (median and p99).

With --runs R the whole run is repeated and the medians of the R runs are reported.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from appfactory import toml_text  # noqa: E402
from daemonproc import sqlite_count  # noqa: E402
from servers import DovecotServer, ImapAccount, SmtpSink  # noqa: E402

CLI = str(ROOT / ".venv" / "bin" / "ticketure-mail")
APPEND_CHUNK = 250  # messages per MULTIAPPEND command: fast, and the bench never holds them all


@dataclass
class RunResult:
    messages: int
    fill_seconds: float
    backlog_seconds: float
    messages_per_second: float
    peak_rss_mb: float
    peak_rss_with_children_mb: float
    peak_pss_with_children_mb: float
    rss_by_fifth_mb: list[float]
    latency_samples: int
    latency_median_ms: float
    latency_p99_ms: float
    latency_max_ms: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=10_000, help="backlog size (default 10000)")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole run; medians are reported (default 1)")
    parser.add_argument("--latency-samples", type=int, default=40,
                        help="single messages dropped into the idle daemon per run (default 40)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--keep", action="store_true", help="keep the working folders (config, database, logs)")
    parser.add_argument("--seed", type=int, default=6, help="seed of the generated mail (default 6)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config value for the daemon, in TOML (e.g. smtp.connections=1); repeatable")
    args = parser.parse_args()
    if args.messages < 1 or args.runs < 1 or args.latency_samples < 1:
        parser.error("-n, --runs and --latency-samples must be at least 1")

    dovecot = DovecotServer()
    sink = SmtpSink()
    results: list[RunResult] = []
    try:
        dovecot.start()
        sink.start()
        for run in range(args.runs):
            say(args, f"run {run + 1}/{args.runs}: {args.messages} messages")
            results.append(one_run(args, dovecot, sink, run))
            say(args, "  " + describe(results[-1]))
    finally:
        sink.stop()
        dovecot.close()

    summary = summarize(results)
    if args.json:
        print(json.dumps({**summary, "runs": [asdict(r) for r in results]}, indent=2))
    else:
        print(f"ticketure-mail bench: N={args.messages}, {args.runs} run(s), {os.cpu_count()} CPU(s); medians of runs:")
        print(f"  backlog throughput : {summary['messages_per_second']:.0f} messages/s end to end "
              f"({summary['backlog_seconds']:.1f} s for {args.messages})")
        print(f"  peak memory (RSS)  : {summary['peak_rss_mb']:.1f} MB daemon VmHWM, "
              f"{summary['peak_rss_with_children_mb']:.1f} MB with its child processes (the sum of their VmHWM)")
        print(f"  peak memory (PSS)  : {summary['peak_pss_with_children_mb']:.1f} MB daemon and child processes "
              f"together (peak of the summed PSS, sampled every {PSS_INTERVAL:g} s)")
        print(f"  daemon RSS by fifth: {', '.join(f'{v:.1f}' for v in summary['rss_by_fifth_mb'])} MB "
              f"(its peak VmRSS in each fifth of the backlog's time: flat memory shows as a level row)")
        print(f"  idle arrival->ack  : median {summary['latency_median_ms']:.0f} ms, "
              f"p99 {summary['latency_p99_ms']:.0f} ms ({summary['latency_samples']} samples per run)")
        print(f"  mailbox fill       : {summary['fill_seconds']:.1f} s (MULTIAPPEND, not part of the figures)")
    return 0


def one_run(args: argparse.Namespace, dovecot: DovecotServer, sink: SmtpSink, run: int) -> RunResult:
    work = Path(tempfile.mkdtemp(prefix="ticketure-bench-"))
    account = dovecot.add_user(f"support-bench-{os.getpid()}-{run}@ticketure.test", f"bench-{run}-not-secret")
    sink.clear()
    rng = random.Random(args.seed + run)
    started = time.monotonic()
    fill(account, generate(rng, args.messages, run))
    fill_seconds = time.monotonic() - started
    say(args, f"  mailbox filled in {fill_seconds:.1f} s")

    config = write_config(work, account, dovecot.port, sink.port, args.set)
    db_file = work / "tickets.sqlite3"
    log_path = work / "daemon.log"
    log_file = log_path.open("wb")
    t0 = time.monotonic()
    daemon = subprocess.Popen([CLI, "--config", str(config), "run"], stdout=subprocess.DEVNULL, stderr=log_file,
                              cwd=work)
    pss = PssSampler(daemon.pid)
    pss.start()
    try:
        wait(lambda: len(sink.messages) >= args.messages, timeout=max(120.0, args.messages / 20),
             what=f"{args.messages} acknowledgements", daemon=daemon, log_path=log_path)
        received = sink.messages
        backlog_seconds = received[args.messages - 1].received_at - t0
        rss_by_fifth = pss.rss_by_fifth(t0, t0 + backlog_seconds)
        wait(lambda: sqlite_count(db_file, "select count(*) from ticket") >= args.messages, timeout=30,
             what="every ticket", daemon=daemon, log_path=log_path)
        check_backlog(received, args.messages, db_file)
        say(args, f"  backlog cleared in {backlog_seconds:.1f} s; measuring idle latency")
        time.sleep(2.0)  # let the daemon settle into waiting for mail
        latencies = idle_latencies(account, sink, args.latency_samples, rng, daemon, log_path)
        peak = peak_rss_mb(daemon.pid)
        peak_all = peak + sum(peak_rss_mb(child) for child in child_pids(daemon.pid))
        peak_pss = pss.finish()
        daemon.send_signal(signal.SIGTERM)
        if daemon.wait(timeout=60) != 0:
            raise SystemExit(f"bench: the daemon exited with {daemon.returncode}; log: {log_path}")
    finally:
        pss.finish()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log_file.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(args, f"  kept {work}")
    ordered = sorted(latencies)
    return RunResult(
        messages=args.messages,
        fill_seconds=round(fill_seconds, 2),
        backlog_seconds=round(backlog_seconds, 2),
        messages_per_second=round(args.messages / backlog_seconds, 1),
        peak_rss_mb=round(peak, 1),
        peak_rss_with_children_mb=round(peak_all, 1),
        peak_pss_with_children_mb=round(peak_pss, 1),
        rss_by_fifth_mb=rss_by_fifth,
        latency_samples=len(ordered),
        latency_median_ms=round(statistics.median(ordered) * 1000, 1),
        latency_p99_ms=round(percentile(ordered, 99) * 1000, 1),
        latency_max_ms=round(ordered[-1] * 1000, 1),
    )


# --- the mail --------------------------------------------------------------------------------

WORDS = (
    "order checkout payment invoice customer account password login page error report export "
    "shipping refund coupon discount warehouse stock barcode scanner printer label template "
    "integration webhook api token timeout slow dashboard chart filter search mobile app "
    "notification email newsletter campaign tracking delivery address tax currency catalogue "
    "product variant price update sync yesterday morning since after before please could you "
    "check help urgent issue problem again still not working our team the a we it is was"
).split()
SUBJECTS = (
    "Checkout fails for some customers", "Invoice totals are wrong", "Cannot log in to the dashboard",
    "Barcode scanner not recognised", "Export to CSV is empty", "Webhook deliveries are delayed",
    "Question about the winter sale cart rule", "Shipping labels print blank", "API returns 502",
    "Newsletter images missing", "Refund not shown on the order", "Stock levels out of sync",
    "Rechnung doppelt verschickt", "Impossible d'imprimer les étiquettes", "Coupon code rejected",
)
URGENT = ("Urgent: {}", "URGENT - {}", "[Urgent-Priority] {}", "Re: Urgent Priority {}", "{} (urgent)")
NAMES = ("Ana Silva", "Bo Chen", "Chloé Dubois", "Dev Patel", "Eva Müller", "Femi Okafor", "Grace Kim",
         "Hiro Tanaka", "Ivan Petrov", "Jana Novák", "Kofi Mensah", "Lena Berg")


def generate(rng: random.Random, n: int, run: int) -> Iterator[bytes]:
    """N messages, one at a time: 50 % plain text, 30 % HTML, 20 % with an attachment; ~20 % urgent.

    Bodies come from a pool of a few hundred generated ones (building each with the email
    package would make filling 50,000 slower than processing them); every message still has
    its own sender, Message-ID, subject and arrival time.
    """
    pool = [body(rng, html=0.5 <= k < 0.8, attachment=k >= 0.8) for k in (rng.random() for _ in range(300))]
    arrival = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(n):
        headers = top_headers(rng, f"client{i}.r{run}@example.com", i, arrival + timedelta(milliseconds=i),
                              urgent=rng.random() < 0.2)
        yield headers + rng.choice(pool)


def message(rng: random.Random, address: str, i: int, when: datetime, *, html: bool, attachment: bool,
            urgent: bool) -> bytes:
    return top_headers(rng, address, i, when, urgent=urgent) + body(rng, html=html, attachment=attachment)


def top_headers(rng: random.Random, address: str, i: int, when: datetime, *, urgent: bool) -> bytes:
    topic = rng.choice(SUBJECTS)
    subject = rng.choice(URGENT).format(topic) if urgent else topic
    lines = [
        f"Return-Path: <{address}>",
        f"Received: from mail-{rng.randrange(1, 250)}.example.com (mail.example.com [192.0.2.{rng.randrange(1, 255)}])",
        f"\tby mx.ticketure.test with ESMTPS id {rng.getrandbits(48):012x}; {format_datetime(when)}",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1;",
        f"\th=from:to:subject:date; bh={base64.b64encode(rng.randbytes(32)).decode()};",
        f"\tb={base64.b64encode(rng.randbytes(128)).decode()}",
        f"From: {formataddr((rng.choice(NAMES), address), charset='utf-8')}",
        "To: Ticketure Support <support@ticketure.test>",
        f"Subject: {Header(subject, 'utf-8').encode() if not subject.isascii() else subject}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <bench-{i}-{rng.getrandbits(64):016x}@example.com>",
        f"X-Mailer: {rng.choice(('Microsoft Outlook 16.0', 'Apple Mail (2.3774)', 'Thunderbird 128.4'))}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def body(rng: random.Random, *, html: bool, attachment: bool) -> bytes:
    """MIME-Version, the content headers and the body, CRLF line ends."""
    msg = EmailMessage()
    text = paragraphs(rng, rng.randrange(3, 9))
    msg.set_content(f"Hello,\n\n{text}\n\nBest regards\n")
    if html:
        paras = "".join(f"<p>{p}</p>\n" for p in text.split("\n\n"))
        msg.add_alternative(f"<html><head><style>p{{font-family:Arial}}</style></head><body>\n"
                            f"<div>Hello,</div>\n{paras}<div>Best regards</div></body></html>\n", subtype="html")
    if attachment:
        name, ctype, data = rng.choice((("screenshot.png", "image/png", 8000), ("invoice.pdf", "application/pdf", 6000),
                                        ("export.csv", "text/csv", 3000)))
        maintype, subtype = ctype.split("/")
        payload = rng.randbytes(rng.randrange(data // 2, data))
        if maintype == "text":
            msg.add_attachment(payload.hex(",", 8), subtype=subtype, filename=name)
        else:
            msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=SMTP)


def paragraphs(rng: random.Random, count: int) -> str:
    return "\n\n".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randrange(25, 70))).capitalize() + "."
        for _ in range(count)
    )


def fill(account: ImapAccount, messages: Iterator[bytes]) -> None:
    with account.connect(timeout=60) as client:
        chunk: list[bytes] = []
        for raw in messages:
            chunk.append(raw)
            if len(chunk) == APPEND_CHUNK:
                client.multiappend("INBOX", chunk)
                chunk = []
        if chunk:
            client.multiappend("INBOX", chunk)


# --- measuring -------------------------------------------------------------------------------


def idle_latencies(account: ImapAccount, sink: SmtpSink, samples: int, rng: random.Random,
                   daemon: subprocess.Popen[bytes], log_path: Path) -> list[float]:
    latencies = []
    with account.connect(timeout=30) as client:
        for i in range(samples):
            address = f"idle{i}.{rng.getrandbits(32):08x}@example.com"
            raw = message(rng, address, 10_000_000 + i, datetime.now(UTC), html=False, attachment=False,
                          urgent=i % 2 == 0)
            before = len(sink.messages)
            appended = time.monotonic()
            client.append("INBOX", raw)
            wait(lambda: len(sink.messages) > before, timeout=120, what=f"the acknowledgement of idle message {i}",
                 daemon=daemon, log_path=log_path, interval=0.002)
            ack = sink.messages[before]
            if ack.rcpt_tos != [address]:
                raise SystemExit(f"bench: expected an acknowledgement to {address}, got one to {ack.rcpt_tos}")
            latencies.append(ack.received_at - appended)
            time.sleep(rng.uniform(0.3, 0.8))  # back to idle before the next one
    return latencies


def check_backlog(received: list, n: int, db_file: Path) -> None:  # type: ignore[type-arg]
    recipients = {m.rcpt_tos[0] for m in received}
    tickets = sqlite_count(db_file, "select count(*) from ticket")
    if len(received) != n or len(recipients) != n or tickets != n:
        raise SystemExit(f"bench: expected {n} tickets and {n} distinct acknowledgements, got {tickets} tickets, "
                         f"{len(received)} acknowledgements to {len(recipients)} addresses")


def child_pids(pid: int) -> list[int]:
    """The daemon's child processes (parsers, senders, multiprocessing's helper)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def peak_rss_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


PSS_INTERVAL = 0.25


class PssSampler(threading.Thread):
    """The highest summed PSS of a process and its children seen while it runs, and the
    process's own resident size over time."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="pss-sampler", daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.rss_samples: list[tuple[float, int]] = []  # (time.monotonic(), VmRSS in kB)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(PSS_INTERVAL):
            try:
                total = sum(pss_kb(p) for p in (self.pid, *child_pids(self.pid)))
                self.rss_samples.append((time.monotonic(), status_kb(self.pid, "VmRSS")))
            except (OSError, ValueError):  # a process ended between listing and reading
                continue
            self.peak_kb = max(self.peak_kb, total)

    def rss_by_fifth(self, start: float, end: float) -> list[float]:
        """The highest VmRSS (MB) sampled in each fifth of [start, end]; 0 for a fifth without samples."""
        fifths = [0.0] * 5
        span = max(end - start, 1e-9)
        for at, kb in list(self.rss_samples):
            if start <= at <= end:
                index = min(int((at - start) / span * 5), 4)
                fifths[index] = max(fifths[index], round(kb / 1024, 1))
        return fifths

    def finish(self) -> float:
        """Stop sampling; the peak in MB."""
        self._done.set()
        if self.is_alive():
            self.join()
        return self.peak_kb / 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError(f"no Pss in /proc/{pid}/smaps_rollup")


def wait(condition, *, timeout: float, what: str, daemon: subprocess.Popen[bytes], log_path: Path,  # type: ignore[no-untyped-def]
         interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if daemon.poll() is not None:
            raise SystemExit(f"bench: the daemon exited ({daemon.returncode}) while waiting for {what}; "
                             f"log tail:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f} s waiting for {what}; log tail:\n{tail(log_path)}")
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summarize(results: list[RunResult]) -> dict[str, float | int | list[float]]:
    keys = ("fill_seconds", "backlog_seconds", "messages_per_second", "peak_rss_mb", "peak_rss_with_children_mb",
            "peak_pss_with_children_mb", "latency_median_ms", "latency_p99_ms", "latency_max_ms")
    summary: dict[str, float | int | list[float]] = {
        k: round(statistics.median(getattr(r, k) for r in results), 1) for k in keys}
    summary["rss_by_fifth_mb"] = [round(statistics.median(r.rss_by_fifth_mb[i] for r in results), 1) for i in range(5)]
    summary["messages"] = results[0].messages
    summary["latency_samples"] = results[0].latency_samples
    summary["run_count"] = len(results)
    return summary


def describe(r: RunResult) -> str:
    return (f"{r.messages_per_second:.0f} msg/s ({r.backlog_seconds:.1f} s), peak RSS {r.peak_rss_mb:.1f} MB "
            f"({r.peak_rss_with_children_mb:.1f} MB with children; PSS together {r.peak_pss_with_children_mb:.1f} MB), "
            f"idle latency median {r.latency_median_ms:.0f} ms p99 {r.latency_p99_ms:.0f} ms")


def write_config(work: Path, account: ImapAccount, imap_port: int, smtp_port: int, overrides: list[str]) -> Path:
    secret = work / "imap-password"
    secret.write_text(account.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    # Only what the throw-away servers need; everything else keeps its default unless --set.
    table: dict[str, dict[str, object]] = {
        "support": {"address": account.address},
        "imap": {"host": "127.0.0.1", "port": imap_port, "tls": "none", "username": account.address,
                 "password_env": "", "password_file": str(secret)},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "username": "", "password_env": "",
                 "from_address": account.address},
        "database": {"url": f"sqlite:///{work / 'tickets.sqlite3'}"},
    }
    for override in overrides:
        key, _, value = override.partition("=")
        section, _, name = key.partition(".")
        table.setdefault(section, {})[name] = tomllib.loads(f"v = {value}")["v"]
    config = work / "config.toml"
    config.write_text(toml_text(table), encoding="utf-8")
    return config


def say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


if __name__ == "__main__":
    sys.exit(main())
