"""The database schema's version, with Alembic: created on first start, upgraded in place.

Every change to tables.py comes with a revision in migrations/versions/ and a new
SCHEMA_HEAD (tests/test_schema.py checks that the revisions build exactly the tables), so a
database made by an earlier version is brought up to date at start instead of failing on a
missing column in the middle of the night.

The whole upgrade is one transaction: on PostgreSQL, which has transactional DDL, under an
advisory lock, so that daemons starting together upgrade once; on SQLite behind BEGIN
IMMEDIATE, which makes other writers wait.

Alembic is imported only when there is work for it (an older or unknown revision): importing
it costs the daemon 11 MB for the rest of its life. A database already at SCHEMA_HEAD is
checked with one query, and an empty one is created from the tables and stamped, as Alembic's
own documentation advises for new databases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, Engine, MetaData, PrimaryKeyConstraint, String, Table, inspect, select, text
from sqlmodel import SQLModel

from . import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from .errors import TicketureError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

# The newest revision in migrations/versions: what this version of ticketure-mail writes.
SCHEMA_HEAD = "0001"

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: the key of the PostgreSQL advisory lock held while one daemon upgrades.
_UPGRADE_LOCK = 0x7469636B  # "tick"
# Alembic's own table, as Alembic makes it.
_VERSION = Table(
    "alembic_version", MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


class SchemaError(TicketureError):
    """The database's schema is one this version cannot use or bring up to date."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # the revision stamped in the database; None for none
    has_tables: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == SCHEMA_HEAD


def state(engine: Engine) -> SchemaState:
    """Where the database stands, without changing it."""
    with engine.connect() as connection:
        return _state(connection)


def upgrade(engine: Engine) -> SchemaState:
    """Create the schema in an empty database, or bring an older one up to this version's.

    A database with our tables but no revision was made before revisions existed: it is
    stamped when it already matches the tables, refused otherwise. A revision this version
    does not know means a newer ticketure-mail wrote it: refused, nothing touched.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        before = _state(connection)
        if before.up_to_date:
            return before
        if before.current is None and not before.has_tables:
            SQLModel.metadata.create_all(connection)
            _stamp(connection)
            log.info("database schema created (revision %s)", SCHEMA_HEAD)
        else:
            _upgrade_with_alembic(connection, before)
        return _state(connection)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, handing env.py ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def alembic_head() -> str | None:
    """The newest revision Alembic finds in migrations/versions (SCHEMA_HEAD must be it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _state(connection: Connection) -> SchemaState:
    names = set(inspect(connection).get_table_names())
    current = connection.execute(select(_VERSION.c.version_num)).scalar() if _VERSION.name in names else None
    return SchemaState(current, bool(names & set(SQLModel.metadata.tables)))


def _stamp(connection: Connection) -> None:
    _VERSION.create(connection, checkfirst=True)
    connection.execute(_VERSION.delete())
    connection.execute(_VERSION.insert().values(version_num=SCHEMA_HEAD))


def _upgrade_with_alembic(connection: Connection, before: SchemaState) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    config = alembic_config(connection)
    if before.current is not None:
        try:
            known = ScriptDirectory.from_config(config).get_revision(before.current) is not None
        except (CommandError, RevisionError):
            known = False
        if not known:
            raise SchemaError(
                f"the database's schema revision {before.current} is unknown to this version of ticketure-mail "
                f"(whose newest is {SCHEMA_HEAD}): a newer version wrote it; run that version, or restore a backup"
            )
        command.upgrade(config, "head")
        log.info("database schema upgraded from revision %s to %s", before.current, SCHEMA_HEAD)
        return
    differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    if differences:
        raise SchemaError(
            "the database has ticketure-mail's tables but no schema revision, and they differ "
            f"from this version's ({_describe(differences)}): it was made by an early version; "
            "move it aside, or alter it to match, then start again"
        )
    _stamp(connection)
    log.info("database schema stamped with revision %s (its tables matched)", SCHEMA_HEAD)


def _describe(differences: list[object], most: int = 3) -> str:
    shown = "; ".join(_difference(d) for d in differences[:most])
    more = len(differences) - most
    return shown + (f"; and {more} more" if more > 0 else "")


def _difference(difference: object) -> str:
    # compare_metadata gives tuples like ("add_column", schema, table, Column), or lists of them.
    if isinstance(difference, list):
        difference = difference[0]
    if isinstance(difference, tuple) and difference:
        kind = str(difference[0]).replace("_", " ")
        names = [getattr(part, "name", part) for part in difference[1:] if isinstance(part, str) or hasattr(part, "name")]
        return " ".join([kind, *(str(n) for n in names if n)])
    return str(difference)
