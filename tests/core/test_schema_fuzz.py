"""Property-based requests generated from the OpenAPI schema (schemathesis), as an
authenticated user, against the real WSGI app and database: no response may be a 5xx."""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 12  # bounded so the suite stays fast


def load_schema():
    # The product's URLs only (the test URLconf adds probe views).
    document = SchemaGenerator(urlconf="config.urls").get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = get_wsgi_application()
    return loaded


schema = load_schema()


@pytest.fixture
def token(make_user) -> str:
    return Token.objects.create(user=make_user("fuzzer")).key


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db(transaction=True)
def test_no_server_errors(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=[not_a_server_error])
