"""Production: secrets only from the environment, HTTPS, JSON logs, Sentry."""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: refuse to start without one
if SECRET_KEY.startswith("insecure") or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be a random value of 50+ characters.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

# --- HTTPS and cookies ------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain HTTP inside the cluster
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
