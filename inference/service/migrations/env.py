"""Alembic environment: runs on the connection :func:`inference.service.db.migrate` passes.

A new revision after a model change: ``alembic.command.revision(config, message,
autogenerate=True)`` with ``config`` made as in ``migrate`` (its ``script_location`` is this
folder) on a database at the previous head, then review the file it writes. Standalone use
of the ``alembic`` command needs ``-x url=DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from inference.service.db import Base, make_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the database as -x url=... (or set sqlalchemy.url)")
    with make_engine(url).begin() as conn:
        _run(conn)
