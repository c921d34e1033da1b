"""Test settings: real PostgreSQL and Redis, isolated per run (config/testing.py)."""

import os
import tempfile
from pathlib import Path

from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, INSTALLED_APPS, REDIS_URL, env
from config.testing import claim_run_resources

TEST_RUN_ID, REDIS_URL = claim_run_resources(REDIS_URL)
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
PRIVATE_STORAGE_ROOT = Path(
    env(
        "PRIVATE_STORAGE_ROOT",
        default=str(Path(tempfile.gettempdir()) / f"taskyard-test-{TEST_RUN_ID}" / "private"),
    )
)
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(PRIVATE_STORAGE_ROOT), "base_url": None},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Test-only tasks that record their runs (tests/probe); never installed elsewhere.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.probe"]
ROOT_URLCONF = "tests.probe.urls"  # the project's URLs plus test-only views
