"""Runs ticketure-mail end to end on throw-away servers and shows the tickets and acknowledgements.

Started by scripts/demo (which prepares .venv first). Everything listens on 127.0.0.1 and is
removed at the end; pass --keep to keep the working folder (config, database, logs).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import DovecotServer, SmtpSink  # noqa: E402

SUPPORT = "support@ticketure.test"
MAIL_DIR = ROOT / "scripts" / "demo-mail"
CLI = [str(ROOT / ".venv" / "bin" / "ticketure-mail")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the working folder and print its path")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ticketure-demo-"))
    dovecot = DovecotServer()
    sink = SmtpSink()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        account = dovecot.add_user(SUPPORT, "demo-password-not-secret")
        dovecot.start()
        sink.start()
        config = write_config(work, account.password, dovecot.port, sink.port)
        step(f"Dovecot on 127.0.0.1:{dovecot.port}, SMTP sink on 127.0.0.1:{sink.port}, config {config}")

        samples = sorted(MAIL_DIR.glob("*.eml"))
        for sample in samples:
            account.append(sample.read_bytes())
        step(f"Put {len(samples)} support emails into {SUPPORT}'s INBOX:")
        for sample in samples:
            print(f"    {sample.name}")

        step("Starting the daemon: ticketure-mail run (IMAP IDLE for new mail, a 2 s poll as the safety net)")
        log_path = work / "daemon.log"
        daemon = subprocess.Popen([*CLI, "--config", str(config), "run"], stdout=subprocess.DEVNULL,
                                  stderr=log_path.open("wb"), cwd=work)
        acks = sink.wait_for(len(samples) - 1, timeout=60)  # one sample is a mailing-list digest
        by_client = {m.rcpt_tos[0]: m.message() for m in acks}
        standard, robot = by_client["chloe.dubois@example.fr"], by_client["dev.patel@example.com"]
        step(f"The sink received {len(acks)} acknowledgements. A client answers hers, now marking it urgent, "
             "and an out-of-office robot answers another:")
        follow_up = reply_to(standard, "Re: urgent " + standard["Subject"],
                             "Les soldes commencent demain matin, c'est devenu urgent.")
        autoreply = out_of_office(robot)
        for raw in (follow_up, autoreply):
            account.append(raw)
            sent = email.message_from_bytes(raw, policy=email.policy.default)
            print(f"    from {sent['From']}: {sent['Subject']}")
        sink.wait_for(len(acks) + 1, timeout=60)  # the escalation acknowledgement
        time.sleep(3)  # a further cycle, to show nothing answers the robot
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        step(f"Daemon stopped with status {daemon.returncode}. Its log, one line per message:")
        for line in log_path.read_text(encoding="utf-8").splitlines():
            if " message-id=" in line or "daemon " in line:
                print("    " + line.split(": ", 1)[-1])

        step("ticketure-mail tickets list")
        run_cli(config, "tickets", "list")
        step("ticketure-mail tickets show TKT-000001")
        run_cli(config, "tickets", "show", "TKT-000001")

        received = sink.messages
        step(f"Acknowledgements received by the SMTP sink ({len(received)}):")
        for m in received:
            msg = m.message()
            print(f"    to {m.rcpt_tos[0]:<28} MAIL FROM:<{m.mail_from}>  {msg['Subject']}")
        step("The first acknowledgement in full:")
        print(indent(received[0].data.decode("utf-8", "replace")))
        if args.keep:
            step(f"Kept the working folder: {work}")
        return 0 if daemon.returncode == 0 else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        sink.stop()
        dovecot.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def write_config(work: Path, password: str, imap_port: int, smtp_port: int) -> Path:
    secret = work / "imap-password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    config = work / "config.toml"
    config.write_text(
        f"""# ticketure-mail demo config: see config.example.toml for every key.
[support]
address = "{SUPPORT}"

[imap]
host = "127.0.0.1"
port = {imap_port}
tls = "none"
username = "{SUPPORT}"
password_file = "{secret}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
username = ""
password_env = ""
from_address = "{SUPPORT}"

[database]
url = "sqlite:///{work / 'tickets.sqlite3'}"

[schedule]
poll_interval_seconds = 2

[calendar]
timezone = "America/New_York"
""",
        encoding="utf-8",
    )
    return config


def reply_to(ack: EmailMessage, subject: str, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = ack["To"]
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="client.example.com")
    msg["In-Reply-To"] = ack["Message-ID"]
    msg["References"] = f"{ack['References'] or ''} {ack['Message-ID']}".strip()
    msg.set_content(text + "\n")
    return msg.as_bytes()


def out_of_office(ack: EmailMessage) -> bytes:
    msg = EmailMessage()
    msg["From"] = ack["To"]
    msg["To"] = SUPPORT
    msg["Subject"] = "Automatic reply: " + ack["Subject"]
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="client.example.com")
    msg["In-Reply-To"] = ack["Message-ID"]
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("I am out of the office until Monday.\n")
    return msg.as_bytes()


def run_cli(config: Path, *args: str) -> None:
    done = subprocess.run([*CLI, "--config", str(config), *args], capture_output=True, text=True, timeout=60)
    print(indent(done.stdout.rstrip() or done.stderr.rstrip()))


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
