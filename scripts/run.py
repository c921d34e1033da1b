"""`make run`: prepare the local stack and start every process with honcho (Ctrl-C stops all).

Database: DATABASE_URL if set; else the local PostgreSQL database `taskyard` (created if
missing) when PostgreSQL answers on 127.0.0.1:5432; else say how to get PostgreSQL and
stop (docs/adr/0004-postgresql-only.md: no SQLite fallback).
Redis: REDIS_URL (default redis://127.0.0.1:6379/0); if it doesn't answer, say how to
start it and stop.
Traces: every process exports over OTLP to the local collector (fakes/otlp_collector.py),
which hands them to Spotlight (scripts/spotlight, installed by `make run` with npm); the
Sentry events go to Spotlight too. Without Node.js the stack runs without the viewer.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PORTS = {
    "WEB_PORT": 8000,
    "FLOWER_PORT": 5555,
    "SMTP_SINK_PORT": 1025,
    "SMTP_SINK_HTTP_PORT": 1080,
    "KYC_VENDOR_PORT": 8025,
    "FX_PROVIDER_PORT": 8026,
    "OTLP_COLLECTOR_PORT": 4318,
    "SPOTLIGHT_PORT": 8969,
    "PAYMENT_PROVIDER_PORT": 8027,
}
SPOTLIGHT = ROOT / "scripts" / "spotlight" / "node_modules" / "@spotlightjs" / "spotlight"


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def database_url(env: dict[str, str]) -> str:
    if env.get("DATABASE_URL"):
        say("database: DATABASE_URL from the environment")
        return env["DATABASE_URL"]
    try:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3", autocommit=True
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'taskyard'").fetchone():
                conn.execute("CREATE DATABASE taskyard")
                say("database: created PostgreSQL database 'taskyard'")
        say("database: PostgreSQL taskyard on 127.0.0.1:5432")
        return "postgres://postgres@127.0.0.1:5432/taskyard"
    except psycopg.OperationalError as exc:
        say(f"database: PostgreSQL not reachable on 127.0.0.1:5432 ({str(exc).strip().splitlines()[0]})")
        say("taskyard needs PostgreSQL (LISTEN/NOTIFY, SKIP LOCKED). Start one, then `make run` again:")
        say("  pg_ctlcluster <version> main start        (Debian/Ubuntu; apt-get install postgresql)")
        say("  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16")
        say("  or set DATABASE_URL=postgres://user:password@host:5432/taskyard")
        sys.exit(1)


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        say(f"Redis is not reachable at {url} ({type(exc).__name__}). Start it, then run `make run` again:")
        say('  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no')
        say("  (or: docker run -d -p 6379:6379 redis:7, or set REDIS_URL)")
        sys.exit(1)
    say(f"redis: {url}")


def check_ports(env: dict[str, str]) -> None:
    busy = []
    for name in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(env[name]))) == 0:
                busy.append(f"{name}={env[name]}")
    if busy:
        say(f"ports in use: {', '.join(busy)}. Stop what holds them or set other ports in the environment.")
        sys.exit(1)


def flower_auth() -> str:
    path = VAR / "flower-credentials"
    if not path.exists():
        path.write_text(f"admin:{secrets.token_urlsafe(12)}")
        path.chmod(0o600)
    return path.read_text().strip()


def procfile_processes() -> list[str]:
    lines = (ROOT / "Procfile.dev").read_text().splitlines()
    return [line.split(":", 1)[0] for line in lines if line.strip() and not line.startswith("#")]


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


def main() -> None:
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    for name, port in PORTS.items():
        env.setdefault(name, str(port))
    env["DATABASE_URL"] = database_url(env)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    check_redis(env["REDIS_URL"])
    check_ports(env)
    env.setdefault("EMAIL_PORT", env["SMTP_SINK_PORT"])
    env.setdefault("SMTP_SINK_DIR", str(VAR / "smtp-sink"))
    env.setdefault("KYC_VENDOR_URL", f"http://127.0.0.1:{env['KYC_VENDOR_PORT']}")
    env.setdefault("FX_PROVIDER_URL", f"http://127.0.0.1:{env['FX_PROVIDER_PORT']}")
    env.setdefault("PAYMENT_PROVIDER_URL", f"http://127.0.0.1:{env['PAYMENT_PROVIDER_PORT']}")
    env.setdefault("FLOWER_BASIC_AUTH", flower_auth())
    processes = procfile_processes()
    if SPOTLIGHT.exists() and shutil.which("node"):
        env.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{env['OTLP_COLLECTOR_PORT']}")
        # Errors into the same viewer as the traces (Spotlight takes Sentry envelopes at /api/<id>/envelope/).
        env.setdefault("SENTRY_DSN", f"http://spotlight@127.0.0.1:{env['SPOTLIGHT_PORT']}/0")
        env.setdefault("SENTRY_ENVIRONMENT", "local")
    else:
        processes = [name for name in processes if name not in ("otel_collector", "spotlight")]
        say(
            "traces: no trace viewer (needs Node.js and `npm ci --prefix scripts/spotlight`); tracing stays off"
        )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"

    # Metrics files of processes from an earlier run would keep adding to /metrics: start empty.
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR / "prometheus"))
    shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True)

    say("migrating ...")
    manage(env, "migrate", "--noinput")
    manage(env, "setup_periodic_tasks")
    manage(env, "collectstatic", "--noinput")
    demo = json.loads(manage(env, "ensure_demo_user").strip().splitlines()[-1])
    manage(env, "ensure_demo_stock")  # the SKUs the demo orders, so they can be fulfilled
    web = f"http://127.0.0.1:{env['WEB_PORT']}"
    flower_user, flower_password = env["FLOWER_BASIC_AUTH"].split(":", 1)
    say("-" * 72)
    say(f"API           {web}/api/   token: {demo['token']}")
    say(f"  try:        curl -H 'Authorization: Token {demo['token']}' {web}/api/me")
    say(f"admin         {web}/admin/   user demo / {demo['password']}")
    say(f"readiness     {web}/readyz")
    say(f"Flower        http://127.0.0.1:{env['FLOWER_PORT']}/   {flower_user} / {flower_password}")
    say(f"SMTP sink     http://127.0.0.1:{env['SMTP_SINK_HTTP_PORT']}/   (smtp on :{env['SMTP_SINK_PORT']})")
    if "spotlight" in processes:
        say(
            f"traces        http://127.0.0.1:{env['SPOTLIGHT_PORT']}/   (Spotlight: traces and errors; docs/tracing.md)"
        )
    say(f"payments      {env['PAYMENT_PROVIDER_URL']}/   (the payment provider fake's captures)")
    say("-" * 72)
    honcho = str(Path(sys.executable).parent / "honcho")
    argv = [honcho, "-f", str(ROOT / "Procfile.dev"), "start", *processes]
    os.execve(honcho, argv, env)  # noqa: S606 - fixed argv


if __name__ == "__main__":
    main()
