"""`make bench`: production-like (no DEBUG, quiet logs) on this machine, with bench tasks.

Like the tests, a bench run claims its own Redis DB number (tests/isolation.py); the
runner (bench/run.py) creates a fresh database and passes it in DATABASE_URL.
"""

from typing import Any

from config.env import env
from tests.isolation import claim_run_resources

BENCH_RUN_ID, _RUN_REDIS_URL = claim_run_resources(env("REDIS_URL", default="redis://127.0.0.1:6379/0"))

from config.settings.base import *  # noqa: E402, F403
from config.settings.base import INSTALLED_APPS, LOGGING, REST_FRAMEWORK  # noqa: E402

_logging: dict[str, Any] = LOGGING

DEBUG = False  # DEBUG keeps every SQL query in memory: never benchmark with it on
SECRET_KEY = env("SECRET_KEY", default="bench-only-secret-key-not-for-production-use-0123456789")
REDIS_URL = _RUN_REDIS_URL
CELERY_BROKER_URL = REDIS_URL
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # bench.noop, bench.noop_plain, bench.started
ROOT_URLCONF = "bench.urls"  # the project's URLs and S1's floor (bench/urls.py), nothing else
LOG_LEVEL = env("LOG_LEVEL", default="WARNING")
_logging["root"]["level"] = LOG_LEVEL
_logging["loggers"]["django"]["level"] = LOG_LEVEL
_logging["loggers"]["taskyard.http"] = {"level": "WARNING"}
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "100000/min", "user": "1000000/min", "auth": "1000/min"},
}
# Every report lists these (bench/report.py): the figures are production's settings but these.
BENCH_DIFFERS_FROM_PRODUCTION = {
    "throttle rates": "raised so the load generator's one user is never throttled "
    "(production: 60/min anonymous, 6000/min per user, 10/min token exchange)",
    "log level": "WARNING (production: INFO): the per-request and per-task INFO lines are not in "
    "the figures; the relay runs at INFO",
    "URLs and tasks": "the project's, plus S1's floor (`/bench/bare`) and the `bench.*` no-op tasks",
}
# bench.noop_plain and bench.started_plain are plain Celery tasks on purpose (the baselines the
# base task is measured against); without this, `manage.py relay_outbox` refuses to start.
SILENCED_SYSTEM_CHECKS = ["taskyard.E001"]
