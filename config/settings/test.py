"""Test settings: real PostgreSQL and Redis, isolated per run (tests/isolation.py)."""

import os
import tempfile
from pathlib import Path

from config.env import env
from tests.isolation import claim_run_resources

# Claimed before the base settings load, so this run's metrics directory is in place
# before anything imports prometheus_client.
TEST_RUN_ID, _RUN_REDIS_URL = claim_run_resources(env("REDIS_URL", default="redis://127.0.0.1:6379/0"))
RUN_DIR = Path(tempfile.gettempdir()) / f"taskyard-test-{TEST_RUN_ID}"
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(RUN_DIR / "prometheus"))

from config.settings.base import *  # noqa: E402, F403
from config.settings.base import DATABASES, INSTALLED_APPS  # noqa: E402

REDIS_URL = _RUN_REDIS_URL
# The broker shares this run's Redis DB unless a test points a process elsewhere.
if "CELERY_BROKER_URL" not in os.environ:
    CELERY_BROKER_URL = REDIS_URL
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "taskyard",
    }
}
DATABASES["default"]["TEST"] = {"NAME": f"test_taskyard_{TEST_RUN_ID}"}
SECRET_KEY = "test-only-secret-key"  # noqa: S105 - tests only
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
PRIVATE_STORAGE_ROOT = Path(env("PRIVATE_STORAGE_ROOT", default=str(RUN_DIR / "private")))
STORAGES = {
    "default": {
        "BACKEND": "core.storage.PrivateFileSystemStorage",
        "OPTIONS": {"location": str(PRIVATE_STORAGE_ROOT)},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# No collectstatic in tests: WhiteNoise serves the apps' static files from the finders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Test-only tasks that record their runs (tests/probe); never installed elsewhere.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.probe"]
ROOT_URLCONF = "tests.probe.urls"  # the project's URLs plus test-only views
