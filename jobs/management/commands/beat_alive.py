"""python manage.py beat_alive [--max-age SECONDS]: exit 0 if beat ticked recently."""

import sys
import time
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from jobs.scheduling.beat import HEARTBEAT_KEY


class Command(BaseCommand):
    help = "Exit 0 when celery beat wrote its heartbeat within --max-age seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=float, default=60.0)

    def handle(self, *args: Any, **options: Any) -> None:
        raw = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3).get(HEARTBEAT_KEY)
        age = time.time() - float(raw) if raw else float("inf")
        if age > options["max_age"]:
            self.stderr.write(f"beat heartbeat is {age:.0f}s old (limit {options['max_age']:.0f}s)")
            sys.exit(1)
        self.stdout.write(f"beat alive: heartbeat {age:.1f}s ago")
