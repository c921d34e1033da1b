"""gunicorn settings shared by Procfile, Procfile.dev and docker-compose.yml."""

import os

timeout = 30
graceful_timeout = 20
accesslog = "-"


def child_exit(server: object, worker: object) -> None:
    # A dead worker's live gauges leave the sum; its counters keep counting.
    # Imported here, not at the top: prometheus_client must first be imported by a worker,
    # after Django settings have set PROMETHEUS_MULTIPROC_DIR.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
