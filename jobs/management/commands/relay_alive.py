"""python manage.py relay_alive [--max-age SECONDS]: exit 0 if this host's relay looped recently.

The relay writes its heartbeat after every pass of its loop (a pass waits at most
OUTBOX_RELAY_POLL_SECONDS for work), so a relay stuck on a dead database connection or a
hung broker call stops refreshing it.
"""

import socket
import sys
import time
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from jobs.worker import RELAY_HEARTBEAT_KEY


class Command(BaseCommand):
    help = "Exit 0 when the relay on this host went round its loop within --max-age seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=float, default=60.0)

    def handle(self, *args: Any, **options: Any) -> None:
        raw = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3).get(
            RELAY_HEARTBEAT_KEY.format(host=socket.gethostname())
        )
        age = time.time() - float(raw) if raw else float("inf")
        if age > options["max_age"]:
            self.stderr.write(f"relay heartbeat is {age:.0f}s old (limit {options['max_age']:.0f}s)")
            sys.exit(1)
        self.stdout.write(f"relay alive: heartbeat {age:.1f}s ago")
