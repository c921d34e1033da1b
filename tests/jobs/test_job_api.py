"""GET /api/jobs/<id>: owner only, state and progress from the task."""

import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from jobs.models import Job
from jobs.services import job_create, job_progress, job_succeed
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_owner_sees_state_and_progress(api, user):
    job = job_create(owner=user, kind="export")
    job_progress(job_id=job.id, progress=40, message="2 of 5 chunks")
    body = api.get(f"/api/jobs/{job.id}").json()
    assert body["state"] == "running"
    assert body["progress"] == 40
    assert body["progress_message"] == "2 of 5 chunks"
    assert body["result_url"] is None


def test_another_users_job_is_404(user, other_user):
    job = job_create(owner=user, kind="export")
    response = client_for(other_user).get(f"/api/jobs/{job.id}")
    assert response.status_code == 404
    assert response.json()["code"] == "not-found"
    assert client_for(other_user).get(f"/api/jobs/{job.id}/result").status_code == 404


def test_unknown_job_is_404(api):
    assert api.get(f"/api/jobs/{uuid.uuid4()}").status_code == 404


def test_result_link_downloads_the_file_once_done(api, user):
    job = job_create(owner=user, kind="export")
    assert api.get(f"/api/jobs/{job.id}/result").status_code == 404  # not done yet
    name = default_storage.save(f"exports/{job.id}.csv", ContentFile(b"a,b\n1,2\n"))
    job_succeed(job_id=job.id, result_file=name)
    body = api.get(f"/api/jobs/{job.id}").json()
    assert body["state"] == Job.State.SUCCEEDED
    assert body["result_url"] == f"/api/jobs/{job.id}/result"
    download = api.get(body["result_url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"a,b\n1,2\n"
