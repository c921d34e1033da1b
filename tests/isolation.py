"""Per-run isolation for the test suite: its own database name and Redis DB number.

Two `make test` runs on one machine must never see each other's rows or messages.
The first process of a run claims a Redis DB number (1-15) with SET NX in DB 0 and
exports it, with a run id, through the environment, so the worker, relay and beat
subprocesses the tests start inherit the same resources.
"""

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import redis

RUN_ID_VAR = "TASKYARD_TEST_RUN_ID"
REDIS_DB_VAR = "TASKYARD_TEST_REDIS_DB"
OWNER_VAR = "TASKYARD_TEST_RUN_OWNER"  # the pytest process that claimed them: an xdist worker id, or ""
CLAIM_TTL_SECONDS = 3 * 60 * 60  # longer than any suite; a killed run frees its DB by itself


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def claim_run_resources(redis_url: str) -> tuple[str, str]:
    """Return (run_id, redis_url_for_this_run), claiming them on first call of a run.

    With pytest-xdist each worker (gw0, gw1, ...) claims its own, so workers running tests side by
    side never share a database, a broker or a Redis key; the processes a test starts inherit the
    claim of the worker that started them through the environment.
    """
    me = os.environ.get("PYTEST_XDIST_WORKER", "")
    run_id = os.environ.get(RUN_ID_VAR)
    db = os.environ.get(REDIS_DB_VAR)
    if run_id and db and os.environ.get(OWNER_VAR, "") == me:
        return run_id, _with_db(redis_url, int(db))
    if run_id:  # inherited from the xdist controller: so is its metrics directory, not ours
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run_id = uuid.uuid4().hex[:10]
    admin = redis.Redis.from_url(_with_db(redis_url, 0))
    for candidate in range(1, 16):
        if admin.set(f"taskyard:test-db:{candidate}", run_id, nx=True, ex=CLAIM_TTL_SECONDS):
            own = _with_db(redis_url, candidate)
            redis.Redis.from_url(own).flushdb()  # leftovers from a killed run
            os.environ[RUN_ID_VAR] = run_id
            os.environ[REDIS_DB_VAR] = str(candidate)
            os.environ[OWNER_VAR] = me
            return run_id, own
    raise RuntimeError(
        "All Redis DB numbers 1-15 are claimed by other test runs "
        "(keys taskyard:test-db:* in DB 0); wait for them or delete stale keys."
    )


def release_run_resources(redis_url: str) -> None:
    """Free this run's Redis DB number (called at the end of the pytest session)."""
    run_id = os.environ.get(RUN_ID_VAR)
    db = os.environ.get(REDIS_DB_VAR)
    if not (run_id and db):
        return
    redis.Redis.from_url(_with_db(redis_url, int(db))).flushdb()
    admin = redis.Redis.from_url(_with_db(redis_url, 0))
    key = f"taskyard:test-db:{db}"
    if admin.get(key) == run_id.encode():
        admin.delete(key)
