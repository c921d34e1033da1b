# Load the Celery app with Django so `@shared_task` and `app.tasks` see one app.
from config.celery_app import app as celery_app

__all__ = ["celery_app"]
