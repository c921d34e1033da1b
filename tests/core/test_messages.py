"""Messages storage is built only where a request uses it (core/messages.py).

That admin messages still reach the next page is asserted by the dead-letter replay test
(tests/jobs/test_admin.py: "Replayed 1; skipped 0" after the redirect).
"""

import pytest
from django.utils.functional import SimpleLazyObject, empty

from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_an_api_request_never_builds_the_messages_storage(user):
    response = client_for(user).get("/api/orders/")
    assert response.status_code == 200
    storage = response.wsgi_request._messages  # type: ignore[attr-defined]
    assert isinstance(storage, SimpleLazyObject)
    assert storage._wrapped is empty  # no cookie store, no session store, nothing saved
