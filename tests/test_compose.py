"""docker-compose.yml is valid and runs every Procfile process (Docker is not available
here, so it is parsed and checked the way `docker compose config` would reject it)."""

from pathlib import Path

import yaml

from jobs.management.commands.run_flower import strong

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile(name: str = "Procfile") -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_every_service_is_runnable_and_references_exist():
    doc = compose()
    services = doc["services"]
    declared_volumes = set(doc.get("volumes", {}))
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on", {})
        for other in depends:  # a list, or a dict keyed by service
            assert other in services, f"{name} depends on unknown {other}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(("/", ".")) or source in declared_volumes, f"{name}: volume {source}"


def test_every_procfile_process_has_a_service():
    services = compose()["services"]
    for process in procfile():
        assert process in services, f"Procfile process {process} has no compose service"


def test_every_local_fake_runs_in_compose_and_the_app_reaches_it():
    services = compose()["services"]
    fakes = {name for name, command in procfile("Procfile.dev").items() if "fakes." in command}
    assert fakes == {"smtp_sink", "kyc_vendor", "fx_provider", "payment_provider", "otel_collector"}
    assert fakes <= set(services)
    env = services["web"]["environment"]
    assert env["EMAIL_HOST"] == "smtp_sink"
    for variable, service in (
        ("KYC_VENDOR_URL", "kyc_vendor"),
        ("FX_PROVIDER_URL", "fx_provider"),
        ("PAYMENT_PROVIDER_URL", "payment_provider"),
    ):
        port = env[variable].rsplit(":", 1)[1]
        assert env[variable] == f"http://{service}:{port}"
        assert services[service]["command"][-1] == port


def test_long_running_processes_have_health_checks():
    services = compose()["services"]
    for name in (
        "postgres",
        "redis",
        "web",
        "relay",
        "beat",
        "worker_emails",
        "worker_kyc",
        "worker_documents",
        "worker_default",
    ):
        assert "healthcheck" in services[name], name
        assert services[name]["healthcheck"]["test"], name
    # workers check their own node name, which must match the -n of their command
    for name in ("worker_emails", "worker_kyc", "worker_documents", "worker_default"):
        service = services[name]
        node = service["command"][service["command"].index("-n") + 1]
        assert service["environment"]["CELERY_NODE"] == node


def test_app_services_wait_for_the_release_step_and_share_private_files():
    services = compose()["services"]
    for name in ("web", "relay", "worker_emails", "worker_documents", "beat"):
        assert services[name]["depends_on"]["release"]["condition"] == "service_completed_successfully"
        assert any(v.endswith(":/app/var/private") for v in services[name]["volumes"]), name


def test_no_secret_defaults_but_the_local_placeholders():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "SENTRY_DSN: ${SENTRY_DSN:-}" in text
    assert "FLOWER_BASIC_AUTH: ${FLOWER_BASIC_AUTH:-admin:local-flower-change-me}" in text


def test_the_local_flower_placeholder_is_one_run_flower_accepts():
    # run_flower refuses passwords under FLOWER_MIN_PASSWORD_LENGTH: a shorter default would
    # leave `docker compose up` without Flower
    default = compose()["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert strong(default.removeprefix("${FLOWER_BASIC_AUTH:-").removesuffix("}"))


def test_every_app_process_exports_traces_to_the_local_viewer():
    services = compose()["services"]
    endpoint = services["web"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint.endswith("http://otel_collector:4318}")  # overridable, defaults to the collector
    collector = services["otel_collector"]["command"]
    assert collector[collector.index("--port") + 1] == "4318"
    assert collector[collector.index("--spotlight") + 1] == "http://spotlight:8969/stream"
    assert services["spotlight"]["ports"] == ["127.0.0.1:8969:8969"]
    for name in ("worker_emails", "relay", "beat"):  # merged from the shared app environment
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint


def test_make_run_starts_the_collector_and_viewer_with_the_stack():
    lines = (ROOT / "Procfile.dev").read_text().splitlines()
    processes = dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))
    assert "--spotlight http://127.0.0.1:${SPOTLIGHT_PORT:-8969}/stream" in processes["otel_collector"]
    assert processes["spotlight"] == "node scripts/spotlight/serve.mjs"
