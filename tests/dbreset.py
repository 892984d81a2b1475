"""Empties a database the tests share (PostgreSQL is one database for the whole session)."""

from sqlalchemy import Engine, text
from sqlmodel import SQLModel

from ticketure_mail import tables  # noqa: F401  (registers the tables)


def empty_database(engine: Engine) -> None:
    """Drop every table of ours and the schema revision, as if the database were new."""
    SQLModel.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
