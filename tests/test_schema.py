"""The schema's revisions on SQLite and PostgreSQL: created, stamped, upgraded, refused."""

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from dbreset import empty_database
from servers import ImapAccount, SmtpSink
from ticketure_mail.cli import main
from ticketure_mail.schema import SCHEMA_HEAD, SchemaError, alembic_config, alembic_head, state, upgrade
from ticketure_mail.store import make_engine

from appfactory import config_table, toml_text


@pytest.fixture
def engine(db_url: str):
    engine = make_engine(db_url)
    # PostgreSQL is one database for the whole session: every test starts from nothing.
    empty_database(engine)
    yield engine
    engine.dispose()


def differences(engine: Engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_the_revisions_build_exactly_the_tables_of_this_version(engine: Engine) -> None:
    # Fails when tables.py changes without a revision in ticketure_mail/migrations/versions.
    assert alembic_head() == SCHEMA_HEAD
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
    assert differences(engine) == []
    assert revision(engine) == SCHEMA_HEAD
    assert upgrade(engine) == state(engine)  # at the head: nothing to do


def test_a_new_database_is_created_and_stamped_at_the_head(engine: Engine) -> None:
    assert state(engine).current is None
    after = upgrade(engine)
    assert after.up_to_date and after.has_tables and revision(engine) == SCHEMA_HEAD
    assert differences(engine) == []
    assert upgrade(engine) == after  # the second start changes nothing


def test_a_database_made_before_revisions_is_stamped_when_it_matches(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO mailbox_state (folder, uidvalidity, last_uid) VALUES ('INBOX', 1, 42)"))
    after = upgrade(engine)
    assert after.current == SCHEMA_HEAD
    with engine.connect() as connection:
        assert connection.execute(text("SELECT last_uid FROM mailbox_state")).scalar() == 42


def test_a_database_made_before_revisions_that_differs_is_refused_untouched(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE outbox DROP COLUMN claimed_by"))
    with pytest.raises(SchemaError, match="claimed_by"):
        upgrade(engine)
    assert revision(engine) is None
    assert "claimed_by" not in {c["name"] for c in inspect(engine).get_columns("outbox")}


def test_a_revision_from_a_newer_version_is_refused_untouched(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dcafe'"))
    with pytest.raises(SchemaError, match="f00dcafe.*newer version"):
        upgrade(engine)
    assert revision(engine) == "f00dcafe"


def test_daemons_starting_together_create_the_schema_once(db_url: str, engine: Engine) -> None:
    engines = [make_engine(db_url) for _ in range(3)]
    outcomes: list[object] = []
    start = threading.Barrier(len(engines))

    def starting(e: Engine) -> None:
        start.wait()
        try:
            outcomes.append(upgrade(e).current)
        except Exception as exc:  # the assertion below shows it
            outcomes.append(exc)

    threads = [threading.Thread(target=starting, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for e in engines:
        e.dispose()
    assert outcomes == [SCHEMA_HEAD] * len(engines)
    assert differences(engine) == []


def test_the_command_line_says_what_is_wrong_in_one_line(engine: Engine, db_url: str, tmp_path: Path,
                                                          mailbox: ImapAccount, sink: SmtpSink,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dcafe'"))
    table = config_table(mailbox, sink, db_url, tmp_path / "pw")
    config = tmp_path / "config.toml"
    config.write_text(toml_text(table), encoding="utf-8")
    assert main(["--config", str(config), "tickets", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "schema revision f00dcafe" in err
