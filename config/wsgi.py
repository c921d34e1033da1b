"""WSGI entry point for gunicorn (`gunicorn config.wsgi`)."""

import os

from django.core.wsgi import get_wsgi_application

# Production unless the environment says otherwise: local settings (DEBUG, open Flower) are
# only ever an explicit choice (`make run` sets them).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()
