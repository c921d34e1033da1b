"""Settings of the domain apps (orders, FX, KYC, fulfilment), part of every environment's base.

The wiring and the task infrastructure are in base.py; every value here comes from the
environment (config/env.py) too, with a default for a local run.
"""

from config.env import env

# --- Orders -----------------------------------------------------------------
# Orders: an unpaid order is cancelled this long after creation (a delayed outbox row).
ORDERS_AUTO_CANCEL_MINUTES = env.float("ORDERS_AUTO_CANCEL_MINUTES", default=30)
ORDERS_DEFAULT_DISPLAY_CURRENCY = env("ORDERS_DEFAULT_DISPLAY_CURRENCY", default="EUR")
ORDERS_EXPORT_CHUNK_SIZE = env.int("ORDERS_EXPORT_CHUNK_SIZE", default=500)
# What order_create enqueues. Only bench/ swaps this, to measure other designs side by side.
ORDERS_ENQUEUE_WORK = env("ORDERS_ENQUEUE_WORK", default="orders.services.enqueue_order_work")

# --- FX ---------------------------------------------------------------------
# The FX-rate provider (fakes/fx_provider.py locally) and the hourly sync (fx.sync_rates).
FX_PROVIDER_URL = env("FX_PROVIDER_URL", default="http://127.0.0.1:8026")
FX_PROVIDER_CONNECT_TIMEOUT = env.float("FX_PROVIDER_CONNECT_TIMEOUT", default=3.0)  # seconds
FX_PROVIDER_READ_TIMEOUT = env.float("FX_PROVIDER_READ_TIMEOUT", default=10.0)  # seconds
# The provider is asked for this base; every other pair is a cross rate through it.
FX_BASE_CURRENCY = env("FX_BASE_CURRENCY", default="EUR")
FX_CURRENCIES = env.list("FX_CURRENCIES", default=["EUR", "USD", "GBP", "CHF", "JPY", "SEK"])
# Rates whose last successful sync is older than this are stale (fx.selectors.rates_are_stale).
FX_STALE_AFTER_SECONDS = env.int("FX_STALE_AFTER_SECONDS", default=2 * 60 * 60)

# --- KYC --------------------------------------------------------------------
# Vendor (fakes/kyc_vendor.py locally): every call has a connect and a read timeout.
KYC_VENDOR_URL = env("KYC_VENDOR_URL", default="http://127.0.0.1:8025")
KYC_VENDOR_API_KEY = env("KYC_VENDOR_API_KEY", default="")  # sent as "Authorization: Token <key>" if set
KYC_VENDOR_CONNECT_TIMEOUT = env.float("KYC_VENDOR_CONNECT_TIMEOUT", default=3.05)  # seconds
KYC_VENDOR_READ_TIMEOUT = env.float("KYC_VENDOR_READ_TIMEOUT", default=20.0)  # seconds
# The vendor's limit, for all workers together (a Redis token bucket, core/ratelimit.py):
# at most N calls in any window of W seconds; up to BURST of them at once, the rest evenly.
KYC_VENDOR_RATE_PER_MINUTE = env.int("KYC_VENDOR_RATE_PER_MINUTE", default=100)  # N
KYC_VENDOR_RATE_WINDOW_SECONDS = env.float("KYC_VENDOR_RATE_WINDOW_SECONDS", default=60.0)  # W
KYC_VENDOR_RATE_BURST = env.int("KYC_VENDOR_RATE_BURST", default=10)
# kyc.run_check: first retry after up to this many seconds, doubling (full jitter, capped at 10 min).
KYC_RETRY_BACKOFF_BASE_SECONDS = env.float("KYC_RETRY_BACKOFF_BASE_SECONDS", default=2.0)
# The result is polled (docs/adr): one GET this often, until a decision or the maximum.
KYC_POLL_INTERVAL_SECONDS = env.float("KYC_POLL_INTERVAL_SECONDS", default=30.0)
KYC_POLL_MAX_COUNT = env.int("KYC_POLL_MAX_COUNT", default=2880)  # 24 h at 30 s; then failed (DLQ)
# Uploads: sizes are enforced while the body streams in; types are sniffed from the bytes.
KYC_MAX_FILE_BYTES = env.int("KYC_MAX_FILE_BYTES", default=10 * 1024 * 1024)
KYC_MAX_FILES = env.int("KYC_MAX_FILES", default=5)
KYC_IMAGE_MIN_SIDE = env.int("KYC_IMAGE_MIN_SIDE", default=200)  # pixels, each side
KYC_IMAGE_MAX_SIDE = env.int("KYC_IMAGE_MAX_SIDE", default=12_000)
KYC_IMAGE_MAX_PIXELS = env.int("KYC_IMAGE_MAX_PIXELS", default=50_000_000)  # decompression bombs
# Documents are deleted this many days after the final decision (kyc.purge_documents, hourly).
KYC_RETENTION_DAYS = env.int("KYC_RETENTION_DAYS", default=30)
# --- Fulfilment -------------------------------------------------------------
# The payment provider (fakes/payment_provider.py locally): every call has a connect and a
# read timeout, and an Idempotency-Key, so a retried capture never charges twice.
PAYMENT_PROVIDER_URL = env("PAYMENT_PROVIDER_URL", default="http://127.0.0.1:8027")
PAYMENT_PROVIDER_API_KEY = env(
    "PAYMENT_PROVIDER_API_KEY", default=""
)  # sent as "Authorization: Bearer <key>"
PAYMENT_PROVIDER_CONNECT_TIMEOUT = env.float("PAYMENT_PROVIDER_CONNECT_TIMEOUT", default=3.05)  # seconds
PAYMENT_PROVIDER_READ_TIMEOUT = env.float("PAYMENT_PROVIDER_READ_TIMEOUT", default=15.0)  # seconds
