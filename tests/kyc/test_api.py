"""KYC upload and status API without a worker: what is accepted, what is refused, what is stored."""

import io
import uuid
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings

from core.models import IdempotencyKey
from jobs.errors import EnqueueError
from jobs.models import OutboxMessage
from kyc import services
from kyc.models import Document, Submission, SubmissionEvent
from tests.conftest import client_for
from tests.kyc.conftest import (
    EXE_BYTES,
    image_bytes,
    kyc_files,
    pdf_bytes,
    png_header_only,
    upload,
    upload_file,
)

pytestmark = pytest.mark.django_db

URL = "/api/kyc/submissions/"


def assert_nothing_saved() -> None:
    assert not Submission.objects.exists()
    assert not Document.objects.exists()
    assert not OutboxMessage.objects.exists()
    assert kyc_files() == []


def problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code, body
    return body


# --- accepted ------------------------------------------------------------------------------
def test_a_pdf_is_accepted_with_202_stored_privately_and_the_check_enqueued(api, user):
    data = pdf_bytes()
    response = upload(api, upload_file(data, name="Alice Smith passport.pdf"))
    assert response.status_code == 202, response.json()
    body = response.json()
    submission = Submission.objects.get()
    # the answer: the submission, pending, and where to watch it
    assert body["id"] == str(submission.id)
    assert body["status"] == "pending"
    assert body["document_type"] == "passport"
    assert body["reason_codes"] == []
    assert body["url"] == f"/api/kyc/submissions/{submission.id}"
    assert response["Location"] == body["url"]
    assert body["documents"] == [
        {"position": 1, "kind": "pdf", "size": len(data), "width": None, "height": None, "purged": False}
    ]
    # the file is stored under a random name (nothing of the client's name), with its bytes intact
    [stored] = kyc_files()
    assert stored.read_bytes() == data
    assert "alice" not in str(stored).lower()
    assert "passport" not in stored.name
    document = Document.objects.get()
    assert document.file.startswith("kyc/")
    assert document.file.endswith(".pdf")
    assert len(document.sha256) == 64
    # the check task is enqueued with the id only (no file, no name, no PII)
    row = OutboxMessage.objects.get()
    assert (row.task_name, row.queue, row.kwargs) == (
        "kyc.run_check",
        "kyc",
        {"submission_id": str(submission.id)},
    )
    assert SubmissionEvent.objects.get().kind == "created"
    assert submission.owner == user


def test_a_real_png_is_accepted_whatever_its_name_and_declared_type(api):
    # given a real PNG, named .pdf and declared as a PDF: the content decides, not the label
    response = upload(api, upload_file(image_bytes("PNG", (640, 480)), "scan.pdf", "application/pdf"))
    assert response.status_code == 202, response.json()
    [document] = response.json()["documents"]
    assert (document["kind"], document["width"], document["height"]) == ("png", 640, 480)
    assert Document.objects.get().file.endswith(".png")


def test_several_files_of_each_kind_are_accepted(api):
    files = [
        upload_file(pdf_bytes(), "a.pdf"),
        upload_file(image_bytes("JPEG", (800, 600)), "b.jpg", "image/jpeg"),
        upload_file(image_bytes("PNG", (300, 300)), "c.png", "image/png"),
    ]
    response = upload(api, *files, document_type="id_card")
    assert response.status_code == 202, response.json()
    assert [d["kind"] for d in response.json()["documents"]] == ["pdf", "jpeg", "png"]
    assert len(kyc_files()) == 3


def test_a_large_file_streams_through_a_temporary_file_and_is_stored_intact(api, settings):
    # bigger than FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): spooled to disk, then moved into storage
    data = pdf_bytes(pad=3 * 1024 * 1024)
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    response = upload(api, upload_file(data), HTTP_IDEMPOTENCY_KEY="big-1")
    assert response.status_code == 202, response.json()
    [stored] = kyc_files()
    assert stored.read_bytes() == data


# --- refused: the right 4xx, no rows, no files ----------------------------------------------
def test_a_windows_executable_renamed_to_pdf_is_415(api):
    response = upload(api, upload_file(EXE_BYTES, "passport.pdf", "application/pdf"))
    body = problem(response, 415, "kyc-unsupported-document")
    assert "files.0" in body["errors"]
    assert_nothing_saved()


def test_text_declared_as_png_is_415(api):
    response = upload(api, upload_file(b"just some text, honestly a PNG" * 10, "photo.png", "image/png"))
    problem(response, 415, "kyc-unsupported-document")
    assert_nothing_saved()


def test_an_empty_file_is_400(api):
    response = upload(api, upload_file(b"", "empty.pdf"))
    body = problem(response, 400, "validation-error")
    assert "files.0" in body["errors"]
    assert_nothing_saved()


def test_a_file_over_the_limit_is_413(api, settings):
    settings.KYC_MAX_FILE_BYTES = 2000
    response = upload(api, upload_file(pdf_bytes(pad=2001)))
    body = problem(response, 413, "kyc-upload-too-large")
    assert body["errors"] == {"files.0": ["The file is larger than 2000 bytes."]}
    assert_nothing_saved()


def test_the_default_limit_is_ten_megabytes(api):
    too_big = pdf_bytes(pad=10 * 1024 * 1024)
    response = upload(api, upload_file(pdf_bytes(), "ok.pdf"), upload_file(too_big, "big.pdf"))
    body = problem(response, 413, "kyc-upload-too-large")
    assert list(body["errors"]) == ["files.1"]  # the second file, by position
    assert_nothing_saved()


def test_a_body_over_the_total_limit_is_refused_without_being_read(user):
    # given a request that announces a huge body whose bytes must never be read
    class Unreadable(io.RawIOBase):
        def read(self, *args):
            raise AssertionError("the body was read")

    client = client_for(user)
    environ: dict[str, Any] = {"CONTENT_LENGTH": str(1024**3), "wsgi.input": Unreadable()}
    response = client.generic("POST", URL, content_type="multipart/form-data; boundary=xyz", **environ)
    problem(response, 413, "body-too-large")
    assert_nothing_saved()


def test_more_files_than_allowed_is_400(api, settings):
    settings.KYC_MAX_FILES = 2
    response = upload(api, *[upload_file(pdf_bytes(), f"{n}.pdf") for n in range(3)])
    body = problem(response, 400, "kyc-document-invalid")
    assert body["errors"] == {"files": ["Send at most 2 files."]}
    assert_nothing_saved()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (image_bytes("PNG", (100, 100)), "each side must be"),  # too small to read
        (image_bytes("PNG", (400, 300))[:200], "not a readable PNG"),  # truncated
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 300, "not a readable PNG"),  # the magic and nothing else
        (b"%PDF-1.4\n" + b"x" * 300, "no %%EOF trailer"),  # a PDF cut off
    ],
)
def test_damaged_or_implausible_documents_are_400(api, data, message):
    response = upload(api, upload_file(data, "doc.bin", "application/octet-stream"))
    body = problem(response, 400, "kyc-document-invalid")
    assert message in body["errors"]["files.0"][0]
    assert_nothing_saved()


@pytest.mark.parametrize(
    "size",
    [
        (30000, 30000),  # 900 megapixels: Pillow itself calls it a bomb
        (8000, 8000),  # 64 megapixels: over KYC_IMAGE_MAX_PIXELS (50 M)
    ],
)
def test_a_decompression_bomb_is_refused_before_it_is_decoded(api, size):
    # a PNG that says it is huge is a few hundred bytes: only its header is ever read
    bomb = png_header_only(*size)
    assert len(bomb) < 1000
    response = upload(api, upload_file(bomb, "bomb.png", "image/png"))
    body = problem(response, 400, "kyc-document-invalid")
    assert "too many pixels" in body["errors"]["files.0"][0]
    assert_nothing_saved()


def test_an_image_wider_than_the_maximum_is_refused(api):
    response = upload(api, upload_file(png_header_only(12001, 300), "wide.png", "image/png"))
    body = problem(response, 400, "kyc-document-invalid")
    assert "each side must be 200-12000 pixels" in body["errors"]["files.0"][0]


def test_one_bad_file_among_good_ones_saves_nothing(api):
    response = upload(api, upload_file(pdf_bytes(), "good.pdf"), upload_file(EXE_BYTES, "bad.pdf"))
    body = problem(response, 415, "kyc-unsupported-document")
    assert list(body["errors"]) == ["files.1"]
    assert_nothing_saved()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"files": []}, "document_type"),
        ({"document_type": "passport"}, "files"),
        ({"document_type": "library_card", "files": []}, "document_type"),
    ],
)
def test_missing_or_unknown_fields_are_400(api, body, field):
    if "files" in body and not body["files"]:
        body = {**body, "files": [upload_file(pdf_bytes())]}
    response = api.post(URL, body, format="multipart")
    assert problem(response, 400, "validation-error")["errors"][field]
    assert_nothing_saved()


def test_json_is_not_accepted_here(api):
    response = api.post(URL, {"document_type": "passport"}, format="json")
    problem(response, 415, "unsupported-media-type")
    assert_nothing_saved()


def test_anonymous_uploads_are_401(anon):
    response = anon.post(URL, {"document_type": "passport", "files": [upload_file(pdf_bytes())]})
    problem(response, 401, "not-authenticated")
    assert_nothing_saved()


# --- one open submission per user ---------------------------------------------------------------
def test_a_second_open_submission_is_409_and_a_decided_one_does_not_count(api, user, other_user):
    first = upload(api)
    assert first.status_code == 202
    files_before = kyc_files()
    response = upload(api)
    problem(response, 409, "kyc-submission-open")
    assert Submission.objects.count() == 1
    assert kyc_files() == files_before  # the refused upload left no file behind
    # another user is not affected
    assert upload(client_for(other_user)).status_code == 202
    # once the first one has a decision, the user may start again
    Submission.objects.filter(pk=first.json()["id"]).update(status=Submission.Status.MANUAL_REVIEW)
    assert upload(api).status_code == 202


def test_the_open_rule_is_a_database_constraint_not_only_a_check(user):
    Submission.objects.create(owner=user, document_type="passport")
    with pytest.raises(IntegrityError, match="kyc_one_open_submission_per_user"), transaction.atomic():
        Submission.objects.create(owner=user, document_type="id_card", status=Submission.Status.CHECKING)


def test_losing_the_race_for_the_open_slot_is_409_and_deletes_the_files(api, user, monkeypatch):
    # given the fast pre-check passes (a concurrent request has not committed yet) ...
    monkeypatch.setattr(services, "has_open_submission", lambda user: False)
    Submission.objects.create(owner=user, document_type="passport")  # ... and then commits first
    response = upload(api)
    problem(response, 409, "kyc-submission-open")
    assert Submission.objects.count() == 1
    assert kyc_files() == []


def test_a_failing_transaction_deletes_the_files_it_wrote(api, monkeypatch):
    def broken(*args, **kwargs):
        raise EnqueueError("outbox refused")

    monkeypatch.setattr(services.outbox, "enqueue", broken)
    with pytest.raises(EnqueueError):
        upload(api, upload_file(pdf_bytes(), "a.pdf"), upload_file(image_bytes(), "b.png", "image/png"))
    assert_nothing_saved()


# --- Idempotency-Key --------------------------------------------------------------------------
def test_the_same_idempotency_key_replays_the_first_answer(api):
    data = pdf_bytes()
    first = upload(api, upload_file(data), HTTP_IDEMPOTENCY_KEY="kyc-1")
    again = upload(api, upload_file(data), HTTP_IDEMPOTENCY_KEY="kyc-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Submission.objects.count() == 1
    assert len(kyc_files()) == 1
    # other bytes under the same key are a different request
    other = upload(api, upload_file(pdf_bytes(marker="other")), HTTP_IDEMPOTENCY_KEY="kyc-1")
    problem(other, 422, "idempotency-key-reused")


def test_a_refused_upload_stores_no_idempotency_key(api):
    upload(api, upload_file(EXE_BYTES), HTTP_IDEMPOTENCY_KEY="kyc-2")
    assert not IdempotencyKey.objects.exists()
    assert upload(api, upload_file(pdf_bytes()), HTTP_IDEMPOTENCY_KEY="kyc-2").status_code == 202


# --- reading ------------------------------------------------------------------------------------
def test_the_owner_reads_the_status_and_others_get_404(api, other_user):
    submission_id = upload(api).json()["id"]
    detail = api.get(f"{URL}{submission_id}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["status"] == "pending"
    assert set(body) >= {"created_at", "updated_at", "check_started_at", "decided_at", "reason_codes"}
    assert problem(client_for(other_user).get(f"{URL}{submission_id}"), 404, "not-found")
    assert problem(api.get(f"{URL}{uuid.uuid4()}"), 404, "not-found")
    # and the list shows only one's own
    assert [s["id"] for s in api.get(URL).json()["results"]] == [submission_id]
    assert client_for(other_user).get(URL).json()["results"] == []


@override_settings(KYC_IMAGE_MIN_SIDE=10)
def test_image_limits_are_settings(api):
    assert upload(api, upload_file(image_bytes("PNG", (50, 50)), "s.png", "image/png")).status_code == 202
