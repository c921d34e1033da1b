"""Fixtures of the deploy tests: the base rendering of deploy/k8s, once per module."""

import pytest

from tests.deploy.kustomize import Doc
from tests.deploy.manifests import rendered


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return rendered("base")
