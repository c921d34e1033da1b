from django.apps import AppConfig


class ProbeConfig(AppConfig):
    """Test-only tasks and views (installed by config.settings.test only)."""

    name = "tests.probe"
    label = "probe"
