"""Alembic's entry for the call history: runs the migrations on the connection it is handed.

:func:`memory.history.store.upgrade_schema` passes an open connection in
``config.attributes["connection"]`` (no ``alembic.ini``, no URL here), so the migrations run
the same from the repository and from an installed package. On Postgres an advisory lock held
for the transaction keeps two processes starting at once from migrating together.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from memory.history.tables import METADATA

#: Advisory lock key of the history's migrations (any constant of our own).
_MIGRATION_LOCK = 0x5241_5050  # "RAPP"

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the call history's migrations run through memory.history.store")
context.configure(
    connection=connection,
    target_metadata=METADATA,
    # SQLite alters a table by copying it (Alembic's batch mode).
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    context.run_migrations()
