"""Two test runs at once never share a Redis DB number or a database name."""

import json
import os
import subprocess
import sys

from django.conf import settings
from django.db import connection

from tests.harness import ROOT
from tests.isolation import REDIS_DB_VAR, RUN_ID_VAR

CLAIM = """
import json, sys
from tests.isolation import claim_run_resources
run_id, url = claim_run_resources(sys.argv[1])
print(json.dumps({"run_id": run_id, "url": url}), flush=True)
sys.stdin.read()  # hold the claim until told to release it
from tests.isolation import release_run_resources
release_run_resources(sys.argv[1])
"""


def other_run() -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in (RUN_ID_VAR, REDIS_DB_VAR)}
    base_url = settings.REDIS_URL.rsplit("/", 1)[0] + "/0"
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, base_url],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_concurrent_runs_claim_different_redis_dbs_and_release_them(db):
    # given this run and two more starting at the same time
    first, second = other_run(), other_run()
    try:
        claims = [json.loads(proc.stdout.readline()) for proc in (first, second)]  # type: ignore[union-attr]
        # then each has its own run id and Redis DB number, none of them this run's
        urls = {settings.REDIS_URL, claims[0]["url"], claims[1]["url"]}
        assert len(urls) == 3
        assert claims[0]["run_id"] != claims[1]["run_id"]
    finally:
        for proc in (first, second):
            proc.communicate("", timeout=30)
    # and a released number can be claimed again by the next run
    third = other_run()
    again = json.loads(third.stdout.readline())  # type: ignore[union-attr]
    third.communicate("", timeout=30)
    assert again["url"] in {claims[0]["url"], claims[1]["url"]}


def test_the_database_name_carries_the_run_id(db):
    assert os.environ[RUN_ID_VAR] in connection.settings_dict["NAME"]
