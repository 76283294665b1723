"""A cursor for the few fixed statements every request runs (the API key's lookup, the
rate limit's count, a live batch's store).

Django's PostgreSQL cursors bind parameters on the client: each run sends the statement
as text with its values quoted in, and the server parses and plans it again. For a short
statement that is most of its cost (a live batch's store: 0.56 ms of server time, 0.20
prepared). `prepared_cursor()` is a cursor of the same connection (its transaction, its
pool) that binds on the server; run with `prepare=True`, a statement is prepared the first
time a connection runs it and only executed after that. Errors come as Django's (an
`OperationalError` stays a 503), but Django's query log and execute wrappers do not see
these statements: keep to fixed, hot ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection


@contextmanager
def prepared_cursor() -> Iterator[psycopg.Cursor]:
    """A server-binding cursor of Django's connection; use `execute(..., prepare=True)`."""
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
