"""Alembic environment: always run with a connection handed over by Database.migrate()."""

from alembic import context

from mailpki.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - mailpki never runs alembic without one
    raise RuntimeError("run migrations through mailpki (Database.migrate)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
