"""Alembic environment for the arena database. ccguard passes its own connection in ``config.attributes``, so the
migrations run inside the store's engine (WAL mode, foreign keys) and never read an alembic.ini."""

from __future__ import annotations

from alembic import context

from ccguard.arena.models import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table, as later migrations need.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
