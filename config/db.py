"""A cursor for the few fixed statements that every judging request runs.

Django binds parameters on the client: each execution reaches PostgreSQL as new SQL text, which
the server parses and plans again. For the judging queue's small joins, planning cost more of
the database's CPU than running them (a five-table join: ~1 ms to plan, ~0.1 ms to run). This
cursor binds parameters on the server instead, so psycopg can prepare a statement the fifth
time one connection runs it (settings: DATABASE_PREPARED_STATEMENTS) and PostgreSQL plans it
once per connection. The ORM keeps Django's own client-side binding cursors.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper


def prepared_cursor() -> CursorWrapper:
    """A cursor for SQL written once with %s placeholders; Django's own off PostgreSQL."""
    database = connections[DEFAULT_DB_ALIAS]  # one lookup: each `connection.x` repeats it
    if database.vendor != "postgresql":
        return database.cursor()
    database.close_if_health_check_failed()  # as Django's own cursor() does
    database.ensure_connection()
    with database.wrap_database_errors:
        # Wrapped as Django wraps its own cursors: errors, query logging and thread checks.
        # The stubs give ServerBindingCursor no psycopg.Cursor base (so no constructor
        # arguments) and leave out BaseDatabaseWrapper._prepare_cursor, which cursor() uses.
        cursor = ServerBindingCursor(database.connection)  # type: ignore[call-arg]
        return database._prepare_cursor(cursor)  # type: ignore[attr-defined]
