"""Django's PostgreSQL backend, with a connection health check that costs no round trip.

With CONN_HEALTH_CHECKS, Django checks a kept connection before its first query in each
request (and each task) by running `SELECT 1`: one more round trip per request, and a
statement for PostgreSQL to run. A connection the server ended while it sat idle (a restart,
`idle_session_timeout`, `pg_terminate_backend`) has been sent the server's goodbye and then
end-of-file, so its socket reads as ready; a healthy idle connection has nothing to read.
So here the check is a zero-timeout poll of the socket. What it can't see, a peer that
vanished without a word, `SELECT 1` would not have seen either until the TCP timeout.

ENGINE = "core.db.postgresql" (config/settings/base.py).
"""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):  # the socket itself is gone
            return False
        # Anything waiting on an idle connection is the server's goodbye (or, rarely, a
        # notice): either way, start over on a fresh connection.
        return not readable
