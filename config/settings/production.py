"""Production: secrets only from the environment, HTTPS, JSON logs, Sentry."""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING, STORAGES, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: refuse to start without one
if SECRET_KEY.startswith("insecure") or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be a random value of 50+ characters.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

# --- HTTPS and cookies ------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [
    r"^healthz$",
    r"^readyz$",
    r"^metrics$",
]  # probes and scrapers speak plain HTTP in the cluster
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Logging: one JSON object per line --------------------------------------------
LOG_JSON = True
LOGGING["handlers"]["console"]["formatter"] = "json"  # type: ignore[index]

# --- Flower: credentials are mandatory outside local settings ----------------------
FLOWER_REQUIRE_AUTH = True

# --- Private files: S3-compatible object storage ------------------------------------
# KYC documents, invoices and exports outlive any one pod and are read by every process,
# so production keeps them in a bucket (AWS S3, or MinIO/Ceph/R2 via AWS_S3_ENDPOINT_URL).
# Objects are private; downloads are 302s to pre-signed URLs valid for
# PRIVATE_DOWNLOAD_URL_TTL_SECONDS (core/storage.py). Credentials come from the standard
# AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the Secret, or workload identity),
# never from settings. PRIVATE_STORAGE=filesystem keeps PRIVATE_STORAGE_ROOT, for a
# single-host deployment only: every process must see the same disk.
PRIVATE_STORAGE = env("PRIVATE_STORAGE", default="s3")
if PRIVATE_STORAGE == "s3":
    STORAGES["default"] = {
        "BACKEND": "core.storage.PrivateS3Storage",
        "OPTIONS": {
            "bucket_name": env("PRIVATE_STORAGE_BUCKET"),  # no default: refuse to start without one
            "location": env("PRIVATE_STORAGE_PREFIX", default=""),
            "region_name": env("AWS_S3_REGION_NAME", default=None),
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default=None),
            "addressing_style": env("AWS_S3_ADDRESSING_STYLE", default=None),  # "path" for most MinIOs
            # Empty for a bucket with ACLs disabled (object ownership "bucket owner enforced").
            "default_acl": env("PRIVATE_STORAGE_ACL", default="private") or None,
            "querystring_expire": env.int("PRIVATE_DOWNLOAD_URL_TTL_SECONDS", default=120),
        },
    }
elif PRIVATE_STORAGE != "filesystem":
    raise ImproperlyConfigured("PRIVATE_STORAGE must be 's3' or 'filesystem'.")
