"""Settings shared by every environment. One labelled section per concern.

Every value that differs between deployments comes from the environment
(config/env.py); local.py, test.py and production.py only change defaults.
"""

import os
import sys
from pathlib import Path

import django_stubs_ext

from config.env import BASE_DIR, env
from jobs import broker
from jobs.queues import Queue

# --- Metrics: before anything imports prometheus_client ----------------------------------
# Every process on a host writes its counters here; /metrics adds them up (multiprocess mode).
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", env("PROMETHEUS_MULTIPROC_DIR", default=str(BASE_DIR / "var" / "prometheus"))
)
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
if "prometheus_client.values" in sys.modules:
    # Too late for "before": the `celery` command imports it (Flower's CLI plugin) before these
    # settings load, and it picks per-process or shared values on import. Pick again, before
    # our metrics exist, or a worker's task counters never reach /metrics.
    _values = sys.modules["prometheus_client.values"]
    _values.ValueClass = _values.get_value_class()  # type: ignore[attr-defined]
METRICS_TOKEN = env("METRICS_TOKEN", default="")  # scrapers send "Authorization: Bearer <token>"
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
# Worker and relay processes on hosts without a web process serve their own /metrics here.
METRICS_EXPORTER_PORT = env.int("METRICS_EXPORTER_PORT", default=0)
METRICS_EXPORTER_ADDRESS = env("METRICS_EXPORTER_ADDRESS", default="127.0.0.1")

# Generic classes (ModelAdmin[Model], QuerySet[Model]) subscriptable at runtime, for type hints.
django_stubs_ext.monkeypatch()

# --- Core -------------------------------------------------------------------
SECRET_KEY = env("SECRET_KEY", default="insecure-local-only-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"  # every timestamp and schedule is UTC; clients localise
USE_I18N = True
USE_TZ = True

INSTALLED_APPS = [
    "core.admin_site.TaskyardAdminConfig",  # django.contrib.admin with a login lockout
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "core",
    "jobs",
    "notifications",
    "orders",
    "kyc",
    "fx",
    "fulfilment",
]

MIDDLEWARE = [
    "core.metrics.MetricsMiddleware",  # first: times everything below it
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.request_id.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.body_limit.BodyLimitMiddleware",  # before CSRF: its check may read a form body
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.messages.LazyMessageMiddleware",  # messages storage only where a page uses it
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/taskyard"),
}
# Keep connections open between requests and tasks (see CELERY_DB_REUSE_MAX);
# health checks drop a connection that broke while idle instead of failing on it. The engine is
# Django's PostgreSQL backend with a health check that polls the socket instead of a SELECT 1.
DATABASES["default"]["ENGINE"] = "core.db.postgresql"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# No ATOMIC_REQUESTS: services own their transactions, so no view holds one across I/O.

# --- Redis (rate limiter, heartbeats, cache) -----------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Every Redis client (core/redis.py) gives up on a call after this many seconds.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=2.0)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "taskyard",
    }
}

# --- Auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ADMIN_URL = env("ADMIN_URL", default="admin/")  # move it off the default path in production
# Failed logins, the token endpoint and the admin counted together (core/login_guard.py): after
# this many from one client address within the lockout, that address is refused (429); after
# this many for one username from anywhere, that username is (slows guessing one account from
# many addresses, without letting one address lock staff out).
# Seconds a web process keeps a token's user instead of reading it per request (core/auth.py):
# a revoked token or deactivated user still works this long on other processes.
AUTH_TOKEN_CACHE_SECONDS = env.int("AUTH_TOKEN_CACHE_SECONDS", default=30)
LOGIN_MAX_FAILURES_PER_ADDRESS = env.int("LOGIN_MAX_FAILURES_PER_ADDRESS", default=5)
LOGIN_MAX_FAILURES_PER_USERNAME = env.int("LOGIN_MAX_FAILURES_PER_USERNAME", default=20)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60)

# --- Hostile clients ----------------------------------------------------------------
# Request bodies above this are refused with 413 before a byte is read (core/body_limit.py).
# The largest valid order (100 lines) is about 12 KB. Parsing costs memory that a worker keeps
# (allocator fragmentation): 50 bodies of 64 KB of `[{},{},...]` grew a gunicorn worker by
# 23 MB, of 32 KB by 11 MB (tests/core/test_body_limits.py keeps it under 20 MB). A view that
# takes uploads declares its own cap (the KYC upload), and streams what it accepts.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=32 * 1024)
# Proxies in front of the web processes that append to X-Forwarded-For: 1 behind an ingress.
# The client address is the entry this many hops from the right (core/client_ip.py); with 0
# the header is ignored, so a client can't choose its own throttle or lockout identity.
TRUSTED_PROXY_HOPS = env.int("TRUSTED_PROXY_HOPS", default=0)
CSRF_FAILURE_VIEW = "core.problems.csrf_failure"

# --- Static and private files -----------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# Uploaded and generated files are private: no MEDIA_URL is routed anywhere;
# they are only ever streamed by an owner-checked API view.
PRIVATE_STORAGE_ROOT = Path(env("PRIVATE_STORAGE_ROOT", default=str(BASE_DIR / "var" / "private")))
STORAGES = {
    "default": {
        "BACKEND": "core.storage.PrivateFileSystemStorage",
        "OPTIONS": {"location": str(PRIVATE_STORAGE_ROOT)},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# KYC identity documents (and every other private file) readable by the app's user only.
_private_storage = STORAGES["default"]
if isinstance(_private_storage, dict) and isinstance(_private_storage.get("OPTIONS"), dict):
    _private_storage["OPTIONS"].update(file_permissions_mode=0o600, directory_permissions_mode=0o700)


# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.auth.CachedTokenAuthentication",  # DRF's, its user kept AUTH_TOKEN_CACHE_SECONDS
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "core.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.Pagination",  # limits: core/pagination.py
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": TRUSTED_PROXY_HOPS,  # DRF's own reading of X-Forwarded-For agrees with ours
    # Redis-backed (the cache), so limits hold across gunicorn processes.
    "DEFAULT_THROTTLE_CLASSES": [
        "core.throttling.AnonRateThrottle",  # DRF's, failing open when Redis is down
        "core.throttling.UserRateThrottle",
        "core.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("THROTTLE_ANON_RATE", default="60/min"),
        "user": env("THROTTLE_USER_RATE", default="6000/min"),
        "auth": env("THROTTLE_AUTH_RATE", default="10/min"),  # token exchange: slows password guessing
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "taskyard API",
    "DESCRIPTION": "Orders and KYC uploads; slow work runs on Celery workers.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],  # the schema is an API too
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["core.schema.drop_slash_duplicates"],
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,  # 150 currency codes need no "* `EUR` - EUR" list
}

# --- Celery -----------------------------------------------------------------
# Read by config/celery_app.py with namespace="CELERY".
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
# No result backend: task state lives in PostgreSQL (jobs.TaskRun, jobs.Job).
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# JSON only: a worker must never unpickle bytes that came off the network.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"  # beat schedules are written in UTC
CELERY_ENABLE_UTC = True
# Ack after the task ran, so a worker that dies mid-task leaves the message to be redelivered.
CELERY_TASK_ACKS_LATE = True
# A child process killed mid-task (OOM, SIGKILL) requeues its message instead of acking it.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Failures are recorded by the base task (retry row in the outbox or a DeadLetter) before the ack.
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = True
# Reserve one message per child: long tasks don't hoard work other workers could run.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Every task has a limit; tasks that need longer say so in their decorator.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
# Longest hard time limit of any task (the export: 15 min); the visibility timeout must exceed it
# or Redis hands a still-running task to a second worker.
TASKYARD_LONGEST_HARD_TIME_LIMIT = 15 * 60
# Redis or RabbitMQ by CELERY_BROKER_URL; jobs/broker.py holds each one's topology.
CELERY_BROKER_TRANSPORT_OPTIONS = broker.transport_options(
    CELERY_BROKER_URL, visibility_timeout=env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * 60 * 60)
)
# RabbitMQ only: deliveries of one message before the broker dead-letters it (our own
# poison check in the base task, TaskRun.deliveries, usually acts first).
BROKER_DELIVERY_LIMIT = env.int("BROKER_DELIVERY_LIMIT", default=5)
# A lost broker connection does NOT cancel running tasks. Cancelling SIGTERMs the pool child
# wherever it is, e.g. after the SMTP server accepted an email and before its ledger row was
# marked sent, and the redelivery then sends it again (the chaos suite's broker outage caught
# that). Left running, the task finishes and records its end; the redelivery of its message
# (its ack was lost with the connection) is refused by TaskRun, or adopted while it still runs.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True  # wait for the broker instead of crashing at boot
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower and `celery events` need task events
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep Django's logging configuration
# Celery's Django fixup closes every DB connection around each task unless this is set:
# a new PostgreSQL connection per task made a one-INSERT task 2.4x slower (docs/performance.md).
CELERY_DB_REUSE_MAX = 1000
# Queues come from one enum; an unknown queue is an error, not a silently created list.
CELERY_TASK_DEFAULT_QUEUE = Queue.DEFAULT.value
CELERY_TASK_QUEUES = broker.task_queues(CELERY_BROKER_URL, delivery_limit=BROKER_DELIVERY_LIMIT)
CELERY_TASK_CREATE_MISSING_QUEUES = False
# Recycle children: bounded memory over long runs.
# Celery's CLI reads these two variables itself (click's CELERY_ env prefix) and refuses 0:
# to turn recycling off, set a number too large to reach.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=10_000)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", default=300_000)  # KiB
CELERY_BEAT_SCHEDULER = "jobs.scheduling.beat:HeartbeatScheduler"  # DatabaseScheduler + heartbeat
DJANGO_CELERY_BEAT_TZ_AWARE = True

# --- Email ------------------------------------------------------------------
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=1025)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)  # a hung SMTP server is a retryable error
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="taskyard <noreply@taskyard.test>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ADMINS = env.list("ADMIN_EMAILS", default=["ops@taskyard.test"])  # dead-letter alerts and digest
EMAIL_MESSAGE_ID_DOMAIN = env("EMAIL_MESSAGE_ID_DOMAIN", default="taskyard.test")
# Retry budget of email tasks: SMTP 4xx/connection errors are retried this many times in all.
EMAIL_RETRY_MAX_ATTEMPTS = env.int("EMAIL_RETRY_MAX_ATTEMPTS", default=8)
EMAIL_RETRY_BACKOFF_BASE = env.float("EMAIL_RETRY_BACKOFF_BASE", default=2.0)  # seconds
EMAIL_RETRY_BACKOFF_CAP = env.float("EMAIL_RETRY_BACKOFF_CAP", default=300.0)

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        # trace_id/span_id (core/tracing.py): empty unless tracing is on and the line is in a span.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(trace_id)s %(span_id)s %(message)s",
        },
    },
    "filters": {
        "request_id": {"()": "core.request_id.RequestIdFilter"},
        "trace": {"()": "core.tracing.TraceContextFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["request_id", "trace"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Replaces Django's default, which emails ADMINS synchronously on every 5xx.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- taskyard ---------------------------------------------------------------
# Outbox: payloads are IDs and small scalars; anything bigger is a bug in the caller.
OUTBOX_MAX_PAYLOAD_BYTES = env.int("OUTBOX_MAX_PAYLOAD_BYTES", default=2048)
OUTBOX_RELAY_BATCH_SIZE = env.int("OUTBOX_RELAY_BATCH_SIZE", default=500)
OUTBOX_RELAY_POLL_SECONDS = env.float("OUTBOX_RELAY_POLL_SECONDS", default=1.0)  # fallback when no NOTIFY
OUTBOX_RELAY_LEASE_SECONDS = env.float(
    "OUTBOX_RELAY_LEASE_SECONDS", default=30.0
)  # a dead relay's claim expires
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)  # sent rows kept for forensics
# Worker liveness: the main process heartbeats its running tasks; the reaper (in the
# relay loop) re-publishes work whose heartbeat is older than the stale limit.
TASKYARD_HEARTBEAT_SECONDS = env.float("TASKYARD_HEARTBEAT_SECONDS", default=2.0)
TASKYARD_HEARTBEAT_STALE_SECONDS = env.float("TASKYARD_HEARTBEAT_STALE_SECONDS", default=15.0)
TASKYARD_REAPER_INTERVAL_SECONDS = env.float("TASKYARD_REAPER_INTERVAL_SECONDS", default=5.0)
# A message sent this long ago that never started, is in no queue and held by no worker
# was lost by the broker (restart without persistence, flush): the reaper re-publishes it.
OUTBOX_LOST_AFTER_SECONDS = env.float("OUTBOX_LOST_AFTER_SECONDS", default=30.0)
OUTBOX_LOST_LOOKBACK_SECONDS = env.float("OUTBOX_LOST_LOOKBACK_SECONDS", default=3600.0)
# Idempotency-Key: how long a key's first response is replayed.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# Dead-letter alerts: at most one email per fingerprint per window.
DEAD_LETTER_ALERT_WINDOW_SECONDS = env.int("DEAD_LETTER_ALERT_WINDOW_SECONDS", default=3600)
# Periodic schedules, defined in code (config/schedules.py) and synced by setup_periodic_tasks.
PERIODIC_SCHEDULES = "config.schedules.SCHEDULES"
# No result backend, so beat must not install its result-cleanup task.
CELERY_RESULT_EXPIRES = None

# --- Flower -----------------------------------------------------------------
FLOWER_ADDRESS = env("FLOWER_ADDRESS", default="127.0.0.1")  # localhost unless a proxy fronts it
FLOWER_PORT = env.int("FLOWER_PORT", default=5555)
FLOWER_URL_PREFIX = env("FLOWER_URL_PREFIX", default="")
FLOWER_DB = Path(env("FLOWER_DB", default=str(BASE_DIR / "var" / "flower.db")))
FLOWER_REQUIRE_AUTH = env.bool("FLOWER_REQUIRE_AUTH", default=True)
FLOWER_MIN_PASSWORD_LENGTH = 16  # `make run` generates 16 characters

# --- Sentry -----------------------------------------------------------------
SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    from core.sentry import init_sentry

    init_sentry(
        dsn=SENTRY_DSN,
        environment=env("SENTRY_ENVIRONMENT", default="local"),
        release=env("SENTRY_RELEASE", default=""),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )

# --- Django tasks -----------------------------------------------------------
# Django's task API (`@task` + `.enqueue()`) on the outbox and the Celery workers
# (jobs/django_tasks/; docs/django-tasks.md). QUEUES: every declared queue.
# MAX_RETURN_VALUE_BYTES caps the JSON return value kept in TaskRun for get_result().
TASKS = {
    "default": {
        "BACKEND": "jobs.django_tasks.backend.OutboxCeleryBackend",
        "QUEUES": [q.value for q in Queue],
        "OPTIONS": {"MAX_RETURN_VALUE_BYTES": 64 * 1024},
    }
}

# --- The domain apps' settings (orders, FX, KYC, fulfilment) ---------------------
from config.settings.apps import *  # noqa: E402, F403
