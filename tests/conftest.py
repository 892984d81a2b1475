"""Pytest fixtures that hand tests real Dovecot, SMTP and PostgreSQL servers on 127.0.0.1.

Servers start once per test session (see tests/servers.py); per-test fixtures give each
test its own mailbox and a clean view of the SMTP sink. Test modules import the helpers as
``from servers import ...`` (this file puts its folder on sys.path).

Fixtures:

* ``dovecot`` (session) - a started DovecotServer.
* ``imap_account`` (session) - the ImapAccount ``support@ticketure.test`` /
  ``support-test-password`` on ``dovecot``; shared by every test that uses it.
* ``mailbox`` (function) - a fresh ImapAccount ``support-<n>@ticketure.test`` with its own
  random password, so a test sees only its own mail.
* ``smtp_sink`` (session) - a started SmtpSink (no SMTPUTF8, no AUTH).
* ``sink`` (function) - ``smtp_sink`` with its messages cleared and failure injection off.
* ``postgres_database`` / ``postgres_url`` (session) - one PostgresDatabase and its URL.
* ``db_url`` (function, parametrized ``sqlite`` / ``postgresql``) - a SQLAlchemy URL. The
  sqlite one is a new file per test. The postgresql one is the session database (a fresh
  database per test costs about 110 ms here): tests must create their tables idempotently
  and use data (message ids, addresses) that no other test uses.

When a test that used Dovecot fails, the tail of Dovecot's log is added to its report.
"""

from __future__ import annotations

import itertools
import secrets
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

# The helpers sit beside this file; put it on sys.path ourselves so `from servers import`
# works whatever pytest's import mode is.
_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

from servers import (  # noqa: E402 - needs the path set above
    DovecotServer,
    ImapAccount,
    PostgresDatabase,
    SmtpSink,
    drop_leftover_databases,
)

SUPPORT_ADDRESS = "support@ticketure.test"
SUPPORT_PASSWORD = "support-test-password"

_mailbox_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer()
    try:
        server.add_user(SUPPORT_ADDRESS, SUPPORT_PASSWORD)
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    return ImapAccount(dovecot, SUPPORT_ADDRESS, SUPPORT_PASSWORD)


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> ImapAccount:
    # A test that stopped the server and failed before starting it again would otherwise
    # break every test after it; start() does nothing when the server is running.
    dovecot.start()
    # Accounts are left in place after the test: they cost one small file each and go
    # away with the server's folder at the end of the session.
    address = f"support-{next(_mailbox_numbers)}@ticketure.test"
    return dovecot.add_user(address, secrets.token_urlsafe(12))


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def sink(smtp_sink: SmtpSink) -> SmtpSink:
    smtp_sink.stop_failing()
    smtp_sink.clear()
    return smtp_sink


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    # Databases of earlier runs that were killed before their teardown would pile up.
    drop_leftover_databases()
    with PostgresDatabase() as database:
        yield database


@pytest.fixture(scope="session")
def postgres_url(postgres_database: PostgresDatabase) -> str:
    return postgres_database.url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        # funcargs holds every fixture value the test had, direct or indirect.
        servers: dict[int, DovecotServer] = {}
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, ImapAccount):
                value = value.server
            if isinstance(value, DovecotServer):
                servers[id(value)] = value
        for server in servers.values():
            tail = server.log_tail(80)
            if tail:
                report.sections.append((f"Dovecot log, last lines ({report.when})", tail))
    return report
