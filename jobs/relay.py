"""The outbox relay: publishes committed outbox rows to the broker.

Loop:
  1. claim due rows: UPDATE ... SET claimed_until = now() + lease, claim_token = <new uuid>
     WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n), committed at once,
     so no row lock is held across the broker call and several relays share the work;
  2. publish the batch through one producer inside kombu's Producer.batch()
     (one Redis round trip per batch), task id = row id, enqueued_at stamped in headers;
  3. mark the rows sent, fenced on the claim token: a relay that stalled past its lease
     (another relay re-claimed the rows) marks nothing.
  Sleep until a NOTIFY arrives, the next row can be claimed (due, and not leased by another
  relay or by a broker outage's back-off), or the poll interval ends.

A crash between 2 and 3 leaves rows claimed but unsent; after the lease they are
published again. The duplicate has the same task id, and the worker's TaskRun check
makes it a no-op. When the broker is down, rows stay in the table (the API keeps
accepting requests) and the relay backs off.
"""

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from kombu.exceptions import KombuError, OperationalError
from prometheus_client import Counter

from core.redis import redis_client
from jobs import tracing
from jobs.app import celery_app
from jobs.outbox import NOTIFY_CHANNEL
from jobs.worker import RELAY_HEARTBEAT_KEY

logger = logging.getLogger(__name__)

# Defined here, not in jobs/task_metrics.py: a counter without labels writes its metrics file when
# created, and only relay processes should have one (not every manage.py command).
OUTBOX_PUBLISHED = Counter("taskyard_outbox_published_total", "Outbox rows published by relays.")
OUTBOX_PUBLISH_ERRORS = Counter("taskyard_outbox_publish_errors_total", "Failed relay publish batches.")

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    KombuError,
    ConnectionError,
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,  # the redis client's errors don't all derive from OSError
    redis.exceptions.TimeoutError,
)


@dataclass(frozen=True)
class Lease:
    """Rows this relay claimed, and the token that proves the claim is still its own."""

    token: uuid.UUID
    rows: list["Claimed"]


@dataclass(frozen=True)
class Claimed:
    id: Any
    task_name: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    priority: int | None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


_CLAIM_SQL = """
UPDATE jobs_outboxmessage
SET claimed_until = now() + make_interval(secs => %(lease)s), claim_token = %(token)s
WHERE id IN (
    SELECT id FROM jobs_outboxmessage
    WHERE sent_at IS NULL AND not_before <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY not_before
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, task_name, queue, args, kwargs, headers, priority, not_before
"""
# The relay's per-wake statements besides the claim are plain SQL as well: as ORM calls (an
# update, an aggregate) they were over a quarter of the relay's profile samples, most of it
# compiling them (bench S3 profiles, docs/performance.md "Cost per order").
# A mark of a lease's rows: only those still under this lease (a lease that ran out may have been
# taken by another relay, whose marks are the ones that count).
_MARK_SQL = "UPDATE jobs_outboxmessage SET {changes} WHERE id = ANY(%(ids)s) AND claim_token = %(token)s"
_SENT = "sent_at = now(), claimed_until = NULL, claim_token = NULL"
_FAILED = (
    "claimed_until = now() + make_interval(secs => %(retry_in)s), "
    "publish_attempts = publish_attempts + 1, last_error = %(error)s"
)
# Seconds until the next unsent row can be claimed: its not_before, or the end of a lease on
# it. NULL when nothing is unsent.
_NEXT_DUE_SQL = """
SELECT extract(epoch FROM min(greatest(not_before, coalesce(claimed_until, not_before))) - now())
FROM jobs_outboxmessage WHERE sent_at IS NULL
"""


class Relay:
    def __init__(
        self,
        *,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        lease_seconds: float | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
        self.poll_interval = poll_interval or settings.OUTBOX_RELAY_POLL_SECONDS
        self.lease_seconds = lease_seconds or settings.OUTBOX_RELAY_LEASE_SECONDS
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self.published_total = 0
        self._failures = 0
        self._listen: psycopg.Connection[Any] | None = None
        self._beat_at = 0.0

    # --- claim / publish / mark ---------------------------------------------------
    def claim(self) -> Lease:
        token = uuid.uuid4()
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL, {"lease": self.lease_seconds, "limit": self.batch_size, "token": token}
            )
            rows = sorted(cursor.fetchall(), key=lambda r: r[7])
        # Django has psycopg hand jsonb back as text (its JSONField parses it); so do we.
        return Lease(
            token, [Claimed(r[0], r[1], r[2], _json(r[3]), _json(r[4]), _json(r[5]), r[6]) for r in rows]
        )

    def publish(self, rows: list[Claimed]) -> None:
        enqueued_at = time.time()
        app = celery_app()
        with (
            tracing.publish_span(rows) as trace_headers,  # a span of its own, linked to each row's trace
            app.producer_or_acquire() as producer,
            producer.batch(max_size=max(len(rows), 1)),
        ):
            for row in rows:
                app.send_task(
                    row.task_name,
                    args=row.args,
                    kwargs=row.kwargs,
                    task_id=str(row.id),
                    queue=row.queue,
                    priority=row.priority,
                    headers={**row.headers, "enqueued_at": enqueued_at, **trace_headers},
                    producer=producer,
                    retry=False,  # the relay owns retrying: rows stay in the table
                    # The outbox admits only small JSON scalars: plain repr() is safe, and
                    # Celery's saferepr was a fifth of the relay's cost per message.
                    argsrepr=repr(row.args),
                    kwargsrepr=repr(row.kwargs),
                )

    def mark_sent(self, lease: Lease) -> int:
        return self._mark(lease, "sent", _SENT)

    def mark_failed(self, lease: Lease, error: BaseException, retry_in: float) -> int:
        """Keep the rows, leased for `retry_in` seconds more: the back-off before a new try."""
        error_text = f"{type(error).__name__}: {error}"[:500]
        return self._mark(lease, "failed", _FAILED, retry_in=retry_in, error=error_text)

    def _mark(self, lease: Lease, what: str, changes: str, **params: Any) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                _MARK_SQL.format(changes=changes),
                {"ids": [r.id for r in lease.rows], "token": lease.token, **params},
            )
            marked = cursor.rowcount
        self._log_lost_rows(lease, marked, what)
        return marked

    @staticmethod
    def _log_lost_rows(lease: Lease, marked: int, what: str) -> None:
        if marked < len(lease.rows):
            logger.warning(
                "relay: %d of %d rows were no longer under this relay's lease; not marked %s",
                len(lease.rows) - marked,
                len(lease.rows),
                what,
            )

    def relay_once(self) -> int:
        """Claim, publish and mark one batch. Returns how many rows were published."""
        lease = self.claim()
        rows = lease.rows
        if not rows:
            return 0
        try:
            self.publish(rows)
        except BROKER_ERRORS as exc:
            self._failures += 1
            delay = self.backoff()
            logger.warning(
                "relay: broker publish failed (%s); %d rows kept, retry in %.1fs",
                type(exc).__name__,
                len(rows),
                delay,
            )
            OUTBOX_PUBLISH_ERRORS.inc()
            self.mark_failed(lease, exc, delay)
            self.stop_event.wait(delay)
            return 0
        self.mark_sent(lease)
        OUTBOX_PUBLISHED.inc(len(rows))
        self._failures = 0
        self.published_total += len(rows)
        return len(rows)

    def backoff(self) -> float:
        return float(min(self.max_backoff, 0.5 * 2 ** min(self._failures - 1, 10)))

    # --- waiting ------------------------------------------------------------------
    def _listen_connection(self) -> psycopg.Connection[Any]:
        if self._listen is None or self._listen.closed:
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            self._listen = psycopg.connect(**params, autocommit=True)
            self._listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._listen

    def seconds_until_next_due(self) -> float:
        """Until the next unsent row can be claimed: its not_before, or the end of another
        relay's lease on it (a broker outage's back-off lease included), so a relay with
        nothing claimable sleeps instead of spinning on claim + select."""
        with connection.cursor() as cursor:
            cursor.execute(_NEXT_DUE_SQL)
            (seconds,) = cursor.fetchone()
        if seconds is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, float(seconds)))

    def wait(self, timeout: float) -> None:
        """Block until a NOTIFY arrives or `timeout` passes."""
        if timeout <= 0:
            return
        listen = self._listen_connection()
        # psycopg's generator also sees notifications it has already buffered (a bare select()
        # on the socket would sleep through those); one wake-up drains all that arrived.
        for _ in listen.notifies(timeout=timeout, stop_after=1):
            pass

    # --- main loop ----------------------------------------------------------------
    def run_forever(self) -> None:
        logger.info(
            "relay started: batch %d, poll %.1fs, lease %.0fs",
            self.batch_size,
            self.poll_interval,
            self.lease_seconds,
        )
        while not self.stop_event.is_set():
            try:
                self._listen_connection()  # LISTEN before claiming: no NOTIFY is missed in between
                while not self.stop_event.is_set() and self.relay_once() == self.batch_size:
                    pass
                self.heartbeat()
                self.wait(self.seconds_until_next_due())
            except (DatabaseError, psycopg.Error) as exc:
                self._failures += 1
                delay = self.backoff()
                logger.warning("relay: database error (%s); retry in %.1fs", type(exc).__name__, delay)
                self._reset_connections()
                self.stop_event.wait(delay)
        self._reset_connections()
        logger.info("relay stopped after publishing %d rows", self.published_total)

    def heartbeat(self) -> None:
        """`relay_alive` (a liveness probe) reads this: the loop went round, the database answered.

        At most once a second, on one kept connection: under load the loop goes round once per
        commit, and a fresh Redis connection each time was a quarter of the relay's CPU."""
        if time.monotonic() - self._beat_at < 1.0:
            return
        try:
            redis_client().set(RELAY_HEARTBEAT_KEY.format(host=socket.gethostname()), time.time(), ex=3600)
            self._beat_at = time.monotonic()
        except redis.RedisError:
            logger.warning("relay heartbeat could not be written")

    def _reset_connections(self) -> None:
        if self._listen is not None:
            with contextlib.suppress(psycopg.Error):
                self._listen.close()
            self._listen = None
        close_old_connections()
        with contextlib.suppress(DatabaseError):
            connection.close()

    def stop(self) -> None:
        self.stop_event.set()
