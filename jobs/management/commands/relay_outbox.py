"""python manage.py relay_outbox: the outbox relay process (Procfile `relay`)."""

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection

from core.metrics import serve_exporter
from jobs import reaper
from jobs.relay import Relay

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Publish committed outbox rows to the broker (LISTEN/NOTIFY, polling fallback)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--poll-interval", type=float, default=None)
        parser.add_argument("--no-reaper", action="store_true", help="don't run the stuck-task reaper")

    def handle(self, *args: Any, **options: Any) -> None:
        relay = Relay(batch_size=options["batch_size"], poll_interval=options["poll_interval"])
        # SIGTERM/SIGINT: finish the batch in hand, then exit.
        signal.signal(signal.SIGTERM, lambda *_: relay.stop())
        signal.signal(signal.SIGINT, lambda *_: relay.stop())
        if not options["no_reaper"]:
            threading.Thread(target=reaper_loop, args=(relay.stop_event,), name="reaper", daemon=True).start()
        serve_exporter()
        relay.run_forever()


def reaper_loop(stop: threading.Event) -> None:
    """The stuck-task reaper on its own thread (and database connection): its queries run
    beside the publishing loop instead of delaying the next NOTIFY wake-up."""
    while not stop.wait(settings.TASKYARD_REAPER_INTERVAL_SECONDS):
        try:
            reaper.reap()
        except Exception:
            logger.exception("reaper failed; the relay keeps publishing")
            close_old_connections()
    connection.close()
