"""A global rate limiter: a token bucket in Redis, one atomic Lua script, shared by every worker.

    bucket = TokenBucket("taskyard:ratelimit:kyc-vendor", capacity=10, refill_per_second=1.5)
    bucket.take()                # Decision(allowed, wait_seconds, tokens_left); never blocks

The bucket holds at most `capacity` tokens and gains `refill_per_second` tokens a second.
A call takes one token; when none is free, the answer says how long until one will be. Two
users: tasks that call a vendor (jobs/ratelimit.py reschedules the task for then, without
spending an attempt) and the API's throttles (core/throttling.py answers 429 with it). The
script reads the clock of the Redis server, so workers on hosts with different clocks share
one notion of time, and it reads, refills, takes and writes in one step, so two workers can
never spend the same token.

Budget: in ANY interval of length T the bucket grants at most capacity + refill * T
tokens (what it held at the start, plus what trickled in). To keep a vendor's "N calls
per W seconds" in every window, choose capacity + refill * W <= N, e.g. capacity B
(the burst) and refill (N - B) / W (see `for_window`).

Celery's `rate_limit` task option is per worker process and does not do this: two
workers with 2 children each would make four times the allowed calls.
"""

from dataclasses import dataclass

import redis

from core.redis import redis_client

# KEYS[1] the bucket; ARGV: capacity, refill per second, tokens to take.
# Returns {allowed (0/1), seconds until enough tokens (string), tokens left (string)}:
# Lua numbers become integers in Redis replies, so the fractions travel as strings.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
  updated = now
end
if now > updated then
  tokens = tokens + (now - updated) * rate
  updated = now
end
if tokens > capacity then
  tokens = capacity
end
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'updated', string.format('%.6f', updated))
-- An untouched bucket refills completely in capacity / rate seconds; after that it is
-- the same as no key at all.
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, string.format('%.6f', wait), string.format('%.6f', tokens)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_seconds: float  # 0 when allowed; else the time until enough tokens are in the bucket
    tokens_left: float


class TokenBucket:
    def __init__(
        self, key: str, *, capacity: float, refill_per_second: float, client: redis.Redis | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1 token")
        if refill_per_second <= 0:
            raise ValueError("refill_per_second must be positive")
        self.key = key
        self.capacity = float(capacity)
        self.refill_per_second = float(refill_per_second)
        self.client = client or redis_client()
        self._script = self.client.register_script(_TAKE)

    @classmethod
    def for_window(
        cls, key: str, *, calls: int, window_seconds: float, burst: int, client: redis.Redis | None = None
    ) -> "TokenBucket":
        """A bucket that never allows more than `calls` in any `window_seconds`.

        Up to `burst` calls may go at once; the rest of the budget refills evenly over the
        window: capacity = burst, refill = (calls - burst) / window.
        """
        if calls < 2:
            raise ValueError("a window needs a budget of at least 2 calls")
        burst = max(1, min(burst, calls - 1))
        return cls(key, capacity=burst, refill_per_second=(calls - burst) / window_seconds, client=client)

    @property
    def interval(self) -> float:
        """Seconds between two tokens once the burst is spent."""
        return 1.0 / self.refill_per_second

    def take(self, tokens: float = 1.0) -> Decision:
        """Take `tokens` if the bucket holds them; never blocks. Redis errors propagate (fail closed)."""
        if tokens > self.capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.capacity}")
        allowed, wait, left = self._script(
            keys=[self.key], args=[self.capacity, self.refill_per_second, tokens]
        )
        return Decision(allowed=bool(int(allowed)), wait_seconds=float(wait), tokens_left=float(left))

    def reset(self) -> None:
        """Forget the bucket's state: it is full again."""
        self.client.delete(self.key)
