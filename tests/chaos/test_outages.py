"""A store the stack depends on goes away under load, then comes back: the broker (with two
relays sharing the outbox) and PostgreSQL (behind a proxy the test cuts). Nothing accepted is
lost, nothing is done twice, and nothing spins while it waits."""

import time

import pytest
from django.db import connection

from tests.chaos.conftest import record_result
from tests.chaos.effects import figures_of, verify
from tests.chaos.proxy import TcpProxy
from tests.chaos.scenario import RATE, outage, wait_for_orders
from tests.harness import cpu_seconds

pytestmark = pytest.mark.django_db(transaction=True)

BROKER_OUTAGE = 30.0  # seconds
CPU_LIMIT = 0.05  # share of one core an idle relay may use while the broker is away


def test_broker_down_30_seconds_with_two_relays_under_load(chaos, user):
    stack = chaos().start(workers=1)
    stack.supervise()  # a worker Celery ends when Redis vanishes mid-restore is restarted (kombu#582)
    relays = [stack.relay, stack.start_relay()]
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 10)
    # when the broker (the stack's own redis-server) is stopped for 30 s
    stack.redis.stop()
    before, cpu_before = len(load.accepted), [cpu_seconds(r.pid) for r in relays]
    down_at = time.monotonic()
    outage(BROKER_OUTAGE)
    down_for = time.monotonic() - down_at
    cpu_share = [(cpu_seconds(r.pid) - c) / down_for for r, c in zip(relays, cpu_before, strict=True)]
    accepted_while_down = len(load.accepted) - before
    stack.redis.start()
    back_at = time.monotonic()
    wait_for_orders(load, 10)
    load.stop()
    drain = stack.wait_idle(timeout=180)
    recovered = time.monotonic() - back_at
    figures = verify(stack, load)
    # then the API kept accepting, both relays waited without spinning, and nothing was lost
    assert not load.failures, load.failures[:5]
    assert accepted_while_down >= 0.75 * RATE * BROKER_OUTAGE
    assert all(r.alive() for r in relays)
    assert max(cpu_share) < CPU_LIMIT, cpu_share
    record_result(
        "broker-down",
        title=f"broker down {BROKER_OUTAGE:.0f} s, two relays",
        what=f"{RATE:.0f} orders/s; the suite's redis-server (the broker) stopped for {BROKER_OUTAGE:.0f} s with two "
        "relays on the outbox, then started again; a worker that exits is restarted, as a supervisor would",
        **figures,
        **figures_of(
            accepted_while_broker_down=accepted_while_down,
            relay_cpu_percent_of_a_core=[100 * s for s in cpu_share],
            workers_restarted=len(stack.restarts),
            recovery_seconds=recovered,
            drain_seconds=drain,
        ),
    )


DB_OUTAGE = 15.0  # seconds


def test_postgresql_unavailable_15_seconds_under_load(chaos, user):
    # given every process of the stack reaching PostgreSQL through a proxy the test can cut
    db = connection.settings_dict
    proxy = TcpProxy(int(db["PORT"] or 5432), db["HOST"] or "127.0.0.1").start()
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    try:
        stack = chaos(DATABASE_URL=f"postgres://{auth}@127.0.0.1:{proxy.port}/{db['NAME']}").start(workers=1)
        load = stack.load(user, rate=RATE)
        wait_for_orders(load, 10)
        # when PostgreSQL goes away for 15 s: refused, and every open connection reset
        proxy.cut()
        before_accepted, before_failed = len(load.accepted), len(load.failures)
        outage(DB_OUTAGE)
        refused = len(load.failures) - before_failed
        accepted_while_down = len(load.accepted) - before_accepted
        proxy.restore()
        back_at = time.monotonic()
        wait_for_orders(load, 10, timeout=60)
        load.stop()
        drain = stack.wait_idle(timeout=180)
        recovered = time.monotonic() - back_at
        figures = verify(stack, load)
    finally:
        proxy.stop()
    # then the API answered 503 problem+json while it was away, and accepted again after
    codes = {p.get("code") for p in load.problems}
    assert refused >= 0.75 * RATE * DB_OUTAGE, refused
    assert accepted_while_down <= 1, accepted_while_down  # at most one committed as the cut came
    assert len(load.problems) == len(load.failures), load.failures[:5]  # every refusal was problem+json
    assert codes == {"database-unavailable"}, load.failures[:5]
    assert all(f.startswith("503 ") for f in load.failures)
    record_result(
        "postgresql-down",
        title=f"PostgreSQL unavailable {DB_OUTAGE:.0f} s",
        what=f"{RATE:.0f} orders/s; every process reaches PostgreSQL through a TCP proxy, cut for {DB_OUTAGE:.0f} s "
        "(connections refused, open ones reset), then restored",
        **figures,
        **figures_of(
            accepted_before_the_outage=before_accepted,
            answered_503_while_down=refused,
            accepted_while_down=accepted_while_down,
            recovery_seconds=recovered,
            drain_seconds=drain,
        ),
    )
