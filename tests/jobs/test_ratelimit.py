"""The Redis token bucket (core/ratelimit.py) against this run's real Redis."""

import threading
import time
import uuid

import pytest

from core.ratelimit import TokenBucket
from jobs.errors import Reschedule
from jobs.ratelimit import take_or_reschedule
from tests.harness import redis_client, wait_until


@pytest.fixture
def key():
    name = f"test:bucket:{uuid.uuid4().hex}"
    yield name
    redis_client().delete(name)


def test_a_full_bucket_allows_its_capacity_at_once_then_says_how_long_to_wait(key):
    # given a bucket of 3 that refills 2 tokens a second
    bucket = TokenBucket(key, capacity=3, refill_per_second=2)
    # when 4 calls come at once
    decisions = [bucket.take() for _ in range(4)]
    # then 3 get a token and the 4th is told to come back in about half a second
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].wait_seconds == pytest.approx(0.5, abs=0.05)
    assert decisions[3].tokens_left < 1


def test_tokens_come_back_at_the_refill_rate(key):
    bucket = TokenBucket(key, capacity=1, refill_per_second=5)  # one token every 0.2 s
    assert bucket.take().allowed
    refused = bucket.take()
    assert not refused.allowed
    started = time.monotonic()
    wait_until(lambda: bucket.take().allowed, timeout=5, interval=0.01, message="the next token")
    elapsed = time.monotonic() - started
    # the token arrived when the refusal said it would, not earlier
    assert refused.wait_seconds - 0.05 <= elapsed <= refused.wait_seconds + 0.3


def test_the_bucket_never_holds_more_than_its_capacity(key):
    bucket = TokenBucket(key, capacity=2, refill_per_second=1)
    # given a bucket that was last used in 1970
    redis_client().hset(key, mapping={"tokens": "0", "updated": "0"})
    # then it is full, not holding decades of tokens: 2 calls pass, the 3rd waits
    assert [bucket.take().allowed for _ in range(3)] == [True, True, False]


def test_workers_in_parallel_never_spend_more_tokens_than_there_are(key):
    # given a bucket of 10 that refills one token every 1000 s, and 8 threads with their own
    # Redis connections trying 25 times each, as fast as they can
    allowed = []
    lock = threading.Lock()

    def hammer() -> None:
        bucket = TokenBucket(key, capacity=10, refill_per_second=0.001, client=redis_client())
        mine = sum(bucket.take().allowed for _ in range(25))
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    # then exactly 10 of the 200 calls got a token: the script reads and writes in one step
    assert len(allowed) == 8
    assert sum(allowed) == 10


def test_for_window_keeps_every_window_within_the_budget(key):
    # 5 calls per 10 s with a burst of 1: capacity 1, the other 4 spread over the window
    bucket = TokenBucket.for_window(key, calls=5, window_seconds=10, burst=1)
    assert (bucket.capacity, bucket.refill_per_second) == (1, 0.4)
    assert bucket.capacity + bucket.refill_per_second * 10 == 5
    # a burst larger than the budget is cut down to leave room for the refill
    assert TokenBucket.for_window(key, calls=5, window_seconds=10, burst=50).capacity == 4
    with pytest.raises(ValueError, match="at least 2"):
        TokenBucket.for_window(key, calls=1, window_seconds=10, burst=1)


def test_idle_buckets_expire_and_keys_are_independent(key):
    bucket = TokenBucket(key, capacity=2, refill_per_second=1)
    other = TokenBucket(f"{key}:other", capacity=2, refill_per_second=1)
    bucket.take()
    bucket.take()
    assert not bucket.take().allowed
    assert other.take().allowed
    # the key lives no longer than a full refill takes (after that it would be full anyway)
    assert 0 < redis_client().ttl(key) <= 3
    redis_client().delete(f"{key}:other")


def test_take_or_reschedule_raises_reschedule_with_the_wait_plus_jitter(key):
    bucket = TokenBucket(key, capacity=1, refill_per_second=2)
    take_or_reschedule(bucket)  # the one token
    with pytest.raises(Reschedule) as refused:
        take_or_reschedule(bucket, what="test vendor")
    # next token in ~0.5 s, plus up to one token interval (0.5 s) of jitter
    assert 0.4 <= refused.value.delay <= 1.05
    assert "rate limit test vendor" in refused.value.reason


def test_invalid_buckets_are_refused(key):
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(key, capacity=0, refill_per_second=1)
    with pytest.raises(ValueError, match="refill"):
        TokenBucket(key, capacity=1, refill_per_second=0)
    with pytest.raises(ValueError, match="cannot take"):
        TokenBucket(key, capacity=1, refill_per_second=1).take(2)
