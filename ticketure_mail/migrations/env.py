"""Run by Alembic for every migration command. ticketure_mail.schema hands over the connection,
already inside the transaction (and, on PostgreSQL, the lock) the whole upgrade runs in."""

from alembic import context
from sqlmodel import SQLModel

from ticketure_mail import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite alters a table by copying it; batch mode writes that for any later migration.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
