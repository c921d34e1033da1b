"""python manage.py run_flower: Flower with authentication, localhost binding and persistence.

Credentials come from the environment only (FLOWER_BASIC_AUTH="user:password", read
by Flower itself, so they never appear in the process list). Outside local settings
Flower refuses to start without them, and everywhere it refuses a password shorter than
FLOWER_MIN_PASSWORD_LENGTH (16): Flower can revoke tasks and shows what they were given.
"""

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def strong(pair: str) -> bool:
    user, _, password = pair.partition(":")
    return bool(user.strip()) and len(password) >= settings.FLOWER_MIN_PASSWORD_LENGTH


class Command(BaseCommand):
    help = "Start Flower (auth from FLOWER_BASIC_AUTH, bound to FLOWER_ADDRESS, persistent state)."

    def handle(self, *args: Any, **options: Any) -> None:
        auth = os.environ.get("FLOWER_BASIC_AUTH", "")
        if settings.FLOWER_REQUIRE_AUTH and not auth:
            raise CommandError(
                "FLOWER_BASIC_AUTH=user:password is required (Flower shows task arguments and can "
                "revoke tasks); only local settings may run it open."
            )
        weak = [pair for pair in auth.split(",") if auth and not strong(pair)]
        if weak:
            raise CommandError(
                f"FLOWER_BASIC_AUTH: every entry must be user:password with a password of at least "
                f"{settings.FLOWER_MIN_PASSWORD_LENGTH} characters ({len(weak)} is not)."
            )
        settings.FLOWER_DB.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "celery", "-A", "config", "flower",
            f"--address={settings.FLOWER_ADDRESS}",
            f"--port={settings.FLOWER_PORT}",
            "--persistent=True",
            f"--db={settings.FLOWER_DB}",
            "--state_save_interval=60000",  # ms: history survives a crash, not only a clean stop
        ]  # fmt: skip
        if settings.FLOWER_URL_PREFIX:
            argv.append(f"--url_prefix={settings.FLOWER_URL_PREFIX}")
        os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with Flower, fixed argv
