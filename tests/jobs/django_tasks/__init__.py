"""Django's task API on the outbox and Celery (jobs/django_tasks/backend.py), on a real worker, relay,
Redis and PostgreSQL: enqueue in the caller's transaction, results read from our own records,
retries, dead letters and replays, time limits, priorities and queues, and the same answers as
Django's immediate backend where both can give one. Shared helpers are in helpers.py."""
