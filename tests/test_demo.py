"""`make demo` doubles as a smoke test: run it against a started stack of real processes."""

import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from fulfilment.models import StockItem
from tests.conftest import start_sink
from tests.harness import ROOT, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=3).status_code < 500
    except requests.RequestException:
        return False


def test_the_demo_walks_through_every_step(isolated, tmp_path):
    # given the whole stack, as `make run` starts it
    user = User.objects.create_superuser("demo", "demo@taskyard.test", "demo-password-123")
    token = Token.objects.create(user=user)
    sink = start_sink(isolated, tmp_path / "sink")
    vendor_port, fx_port, web_port, flower_port = free_port(), free_port(), free_port(), free_port()
    payments_port = free_port()
    StockItem.objects.create(sku="MUG-RED", available=10_000)  # what `make run` seeds
    isolated.spawn(
        "payments", [sys.executable, "-m", "fakes.payment_provider", "--port", str(payments_port)]
    ).wait_for_log("payment provider")
    isolated.spawn("kyc-vendor", [sys.executable, "-m", "fakes.kyc_vendor", "--port", str(vendor_port)])
    isolated.spawn("fx", [sys.executable, "-m", "fakes.fx_provider", "--port", str(fx_port)]).wait_for_log(
        "fx provider"
    )
    isolated.base_env.update(
        EMAIL_PORT=str(sink.smtp_port),
        KYC_VENDOR_URL=f"http://127.0.0.1:{vendor_port}",
        FX_PROVIDER_URL=f"http://127.0.0.1:{fx_port}",
        PAYMENT_PROVIDER_URL=f"http://127.0.0.1:{payments_port}",
        KYC_POLL_INTERVAL_SECONDS="1",
        FLOWER_BASIC_AUTH="ops:demo-flower-password",
    )
    isolated.spawn(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "config/gunicorn_conf.py",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{web_port}",
        ],
    )
    isolated.spawn(
        "flower",
        [sys.executable, "manage.py", "run_flower"],
        FLOWER_PORT=str(flower_port),
        FLOWER_DB=str(tmp_path / "f.db"),
    )
    isolated.relay()
    isolated.worker("demo")
    wait_until(lambda: answers(f"http://127.0.0.1:{web_port}/healthz"), timeout=30, message="gunicorn")
    wait_until(
        lambda: answers(f"http://127.0.0.1:{vendor_port}/control"), timeout=30, message="the vendor fake"
    )
    wait_until(lambda: answers(f"http://127.0.0.1:{flower_port}/healthcheck"), timeout=40, message="Flower")
    # when the demo runs against it
    env = {
        **isolated.base_env,
        "WEB_URL": f"http://127.0.0.1:{web_port}",
        "SMTP_SINK_URL": f"http://127.0.0.1:{sink.http_port}",
        "KYC_VENDOR_URL": f"http://127.0.0.1:{vendor_port}",
        "FLOWER_URL": f"http://127.0.0.1:{flower_port}",
        "DEMO_TOKEN": token.key,
        "DEMO_USERNAME": "demo",
        "DEMO_PASSWORD": "demo-password-123",
    }
    result = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    # then every step behaved as it says
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("\u2713") == 12, result.stdout
    assert "done" in result.stdout
