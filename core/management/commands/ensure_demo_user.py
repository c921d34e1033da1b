"""python manage.py ensure_demo_user: the local demo account (`make run` only).

Creates `demo` (a superuser, so the admin's dead-letter pages work) once, with a
random password kept in var/demo-credentials.json, and prints its API token.
"""

import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the local demo user if missing and print its API token."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("ensure_demo_user is for local development only (DEBUG=True).")
        path = settings.BASE_DIR / "var" / "demo-credentials.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = json.loads(path.read_text()) if path.exists() else {}
        password = saved.get("password") or secrets.token_urlsafe(12)
        user = User.objects.filter(username="demo").first()
        if user is None:
            user = User.objects.create_superuser("demo", "demo@taskyard.test", password, first_name="Demo")
        elif not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
        token, _ = Token.objects.get_or_create(user=user)
        path.write_text(json.dumps({"username": "demo", "password": password, "token": token.key}))
        path.chmod(0o600)
        self.stdout.write(json.dumps({"username": "demo", "password": password, "token": token.key}))
