"""gunicorn serving the product's URLs on the test database, for the API contract tests."""

from collections.abc import Iterator

import pytest

from tests.harness import Processes


@pytest.fixture(scope="module")
def web(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Its base URL. Per-user throttling is out of the way of thousands of generated requests (its
    limits have their own tests); the token exchange's limit is kept."""
    procs = Processes(tmp_path_factory.mktemp("web"))
    try:
        _, url = procs.web(workers=2, THROTTLE_USER_RATE="1000000/min")
        yield url
    finally:
        procs.stop_all()
