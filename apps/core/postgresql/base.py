"""Django's PostgreSQL backend, with a cheaper check of a pooled connection.

Django has psycopg's pool check each connection it hands out with an empty query: a round
trip to the server on every request, to catch a connection the server dropped while it was
idle. Here a connection returned to the pool less than `QUIET_SECONDS` ago, whose socket
has nothing to read, is taken as it is: a server that ends a connection (a restart,
`pg_terminate_backend`, an idle timeout, a crash) says so on the socket, with an error
message or the connection's end, and an idle connection receives nothing else. Any other
connection gets the empty query, and one that fails it is given back (the pool replaces
it) and the next one taken, as psycopg's pool does.

What the socket cannot tell is a peer gone silently (a network cut, a failover that moved
the address): the query would have found it at once, the request finds it within its
first statement. The window is kept short for that reason; under load a connection comes
back within milliseconds. A descriptor past select()'s limit (1024, with that many client
connections open) gets the query.
"""

from __future__ import annotations

import select
import time
import weakref

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

QUIET_SECONDS = 1.0
# when each pooled connection was last given back (by any wrapper of this process)
_returned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def quiet(connection, now: float) -> bool:
    """Returned to the pool less than `QUIET_SECONDS` before `now`, open, and nothing
    arrived on its socket since: no round trip needed."""
    returned = _returned.get(connection)
    if returned is None or now - returned > QUIET_SECONDS or connection.closed:
        return False
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except ValueError:  # past select()'s limit
        return False
    return not readable


def answers(connection) -> bool:
    try:
        ConnectionPool.check_connection(connection)
    except Exception:
        return False
    return True


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if not self.pool:
            return connection  # Django checks it (CONN_HEALTH_CHECKS)
        # each failed one is replaced by the pool: every connection it holds may have been
        # dropped at once (a restart), and then some
        for _ in range(self.pool.max_size + 1):
            try:
                if quiet(connection, time.monotonic()) or answers(connection):
                    return connection
            except BaseException:  # interrupted (a greenlet killed): the pool keeps its slot
                self.pool.putconn(connection)
                raise
            self.pool.putconn(connection)
            connection = super().get_new_connection(conn_params)
        return connection  # the server is down: the request's first query says so

    def _close(self):
        if self.pool and self.connection is not None:
            _returned[self.connection] = time.monotonic()
        return super()._close()
