"""Local development (`make run`): debug on, everything on this machine."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
# Flower may run without credentials only here, and only on localhost.
FLOWER_REQUIRE_AUTH = env.bool("FLOWER_REQUIRE_AUTH", default=False)
# The local vendor fake decides in 2 s; poll it every 3 s instead of production's 30 s.
KYC_POLL_INTERVAL_SECONDS = env.float("KYC_POLL_INTERVAL_SECONDS", default=3.0)
# Small export chunks locally, so `make demo`'s progress bar moves on its 600 orders.
ORDERS_EXPORT_CHUNK_SIZE = env.int("ORDERS_EXPORT_CHUNK_SIZE", default=100)
