"""The Celery application. All configuration lives in Django settings (CELERY_* names)."""

import os

from celery import Celery

# Production unless the environment says otherwise: local settings (DEBUG, open Flower) are
# only ever an explicit choice (`make run` sets them).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("taskyard")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Tasks are found in each installed app's tasks.py.
app.autodiscover_tasks()
