"""The Celery app, as the task infrastructure and the apps reach it.

config/celery_app.py creates and configures the app; every process imports it first
(loading Django's settings imports the `config` package, whose __init__ imports it), and
a new Celery app makes itself the current one. jobs/ and the domain apps never import
config (dependencies point one way: docs/architecture.md), so they ask Celery for the
current app, and declare tasks with `shared_task`.
"""

from celery import Celery, current_app


def celery_app() -> Celery:
    # The proxy's target: the configured app, typed (the stubs don't declare the proxy's method).
    app: Celery = current_app._get_current_object()  # type: ignore[attr-defined]
    return app
