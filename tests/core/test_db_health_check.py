"""The connection health check without a round trip (core/db/postgresql/base.py)."""

import psycopg
import pytest
from django.db import close_old_connections, connection

from tests.harness import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def observer() -> psycopg.Connection:
    params = connection.get_connection_params()
    return psycopg.connect(
        host=params.get("host"), port=params.get("port"), user=params.get("user"),
        dbname=params["dbname"], autocommit=True,
    )  # fmt: skip


def last_statement_of(pid: int) -> str:
    with observer() as conn:
        row = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row[0] if row else ""


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), 'health check probe'")
        return int(cursor.fetchone()[0])


def test_a_healthy_idle_connection_passes_without_a_statement():
    pid = backend_pid()
    assert connection.is_usable()
    # Django's own check would have run SELECT 1 on this backend
    assert "health check probe" in last_statement_of(pid)


def test_a_connection_the_server_ended_fails_the_check_and_is_replaced_before_the_next_query():
    pid = backend_pid()
    with observer() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(lambda: not connection.is_usable(), timeout=10, message="the check to see the ended session")
    close_old_connections()  # what every request start does (request_started)
    with connection.cursor() as cursor:  # no OperationalError: a new session was opened
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid
