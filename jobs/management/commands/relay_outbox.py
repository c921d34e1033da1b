"""python manage.py relay_outbox: the outbox relay process (Procfile `relay`)."""

import logging
import signal
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from jobs import rescue
from jobs.relay import Relay
from jobs.worker import serve_metrics

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Publish committed outbox rows to the broker (LISTEN/NOTIFY, polling fallback)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--poll-interval", type=float, default=None)
        parser.add_argument("--no-reaper", action="store_true", help="don't run the stuck-task reaper")

    def handle(self, *args: Any, **options: Any) -> None:
        last_reap = [0.0]

        def housekeeping(_: Relay) -> None:
            if time.monotonic() - last_reap[0] >= settings.TASKYARD_REAPER_INTERVAL_SECONDS:
                last_reap[0] = time.monotonic()
                try:
                    rescue.reap()
                except Exception:
                    logger.exception("reaper failed; the relay keeps publishing")

        relay = Relay(
            batch_size=options["batch_size"],
            poll_interval=options["poll_interval"],
            on_cycle=None if options["no_reaper"] else housekeeping,
        )
        # SIGTERM/SIGINT: finish the batch in hand, then exit.
        signal.signal(signal.SIGTERM, lambda *_: relay.stop())
        signal.signal(signal.SIGINT, lambda *_: relay.stop())
        serve_metrics()
        relay.run_forever()
