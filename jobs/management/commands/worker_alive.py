"""python manage.py worker_alive [--node NAME]: exit 0 if the worker answers a ping.

A container health check for worker processes: the worker's consumer must answer a
broadcast ping through the broker within the timeout (a worker that lost its broker
connection or hung does not).
"""

import socket
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.app import celery_app


class Command(BaseCommand):
    help = "Exit 0 when the named worker answers a ping within the timeout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", help="worker node name (default: every worker on this host)")
        parser.add_argument("--timeout", type=float, default=5.0)

    def handle(self, *args: Any, **options: Any) -> None:
        replies = celery_app().control.ping(
            destination=[options["node"]] if options["node"] else None, timeout=options["timeout"]
        )
        names = [name for reply in replies or [] for name in reply]
        host = socket.gethostname()
        alive = names if options["node"] else [n for n in names if n.endswith(f"@{host}")]
        if not alive:
            self.stderr.write(f"no answer from {options['node'] or f'any worker on {host}'}")
            sys.exit(1)
        self.stdout.write(f"alive: {', '.join(sorted(alive))}")
