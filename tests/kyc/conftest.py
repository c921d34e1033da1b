"""The KYC vendor fake as a real subprocess, the session stack pointed at it, and documents."""

import io
import os
import shutil
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.conftest import Stack
from tests.harness import HttpFake, Processes, free_port

# The session worker's KYC settings: no rate limit to speak of, quick polls and retries.
FLOW_ENV = {
    "KYC_VENDOR_RATE_PER_MINUTE": "100000",
    "KYC_VENDOR_RATE_BURST": "1000",
    "KYC_POLL_INTERVAL_SECONDS": "0.3",
    "KYC_RETRY_BACKOFF_BASE_SECONDS": "0.2",
    "KYC_VENDOR_CONNECT_TIMEOUT": "1",
    "KYC_VENDOR_READ_TIMEOUT": "1.5",
}
DECISION_DELAY = 0.5  # the fake decides half a second after a submit: the first poll usually finds it


class KycVendor(HttpFake):
    def stats(self, window: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        return super().stats(**({"window": str(window)} if window else {}))

    def submits_for(self, submission_id: Any) -> int:
        return int(self.stats()["submits_by_key"].get(str(submission_id), 0))


def start_vendor(procs: Processes, *args: str) -> KycVendor:
    port = free_port()
    argv = [sys.executable, "-m", "fakes.kyc_vendor", "--port", str(port), *args]
    proc = procs.spawn("kyc-vendor", argv)
    proc.wait_for_log("kyc vendor:")
    return KycVendor(proc, port)


@pytest.fixture(scope="session")
def kyc_vendor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KycVendor]:
    procs = Processes(tmp_path_factory.mktemp("kyc-vendor"), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield start_vendor(procs, "--decision-delay", str(DECISION_DELAY))
    finally:
        procs.stop_all()


@pytest.fixture
def vendor(kyc_vendor_server: KycVendor, settings: Any) -> Iterator[KycVendor]:
    """The fake with its checks and counters forgotten; this process's client points at it."""
    kyc_vendor_server.reset()
    settings.KYC_VENDOR_URL = kyc_vendor_server.url
    yield kyc_vendor_server
    kyc_vendor_server.reset()


@pytest.fixture(scope="session")
def kyc_stack_env(stack: Stack, kyc_vendor_server: KycVendor) -> None:
    """The session stack's worker reaches the fake (set before `live` starts the stack)."""
    stack.use_env(KYC_VENDOR_URL=kyc_vendor_server.url, **FLOW_ENV)


@pytest.fixture
def kyc_live(kyc_stack_env: None, vendor: KycVendor, live: Stack) -> Stack:
    """The running stack (relay, worker on all queues, SMTP sink) with its worker on the fake."""
    return live


# --- private storage -------------------------------------------------------------------
def kyc_files() -> list[Path]:
    root = Path(django_settings.PRIVATE_STORAGE_ROOT) / "kyc"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def empty_kyc_storage() -> None:
    shutil.rmtree(Path(django_settings.PRIVATE_STORAGE_ROOT) / "kyc", ignore_errors=True)


# --- documents -----------------------------------------------------------------------------
def pdf_bytes(marker: str = "", pad: int = 0) -> bytes:
    body = f"1 0 obj << /Type /Catalog >> endobj % {marker}\n".encode() + b" " * pad
    return b"%PDF-1.7\n" + body + b"trailer << /Root 1 0 R >>\n%%EOF\n"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (400, 300), marker: str = "") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 180, 160)).save(buffer, format=fmt)
    data = buffer.getvalue()
    if marker and fmt == "PNG":  # a text chunk after IEND is ignored by readers, seen by the fake
        data += marker.encode()
    return data


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG that claims any size: a header, a token of pixel data, the end."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


EXE_BYTES = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200 + b"This program"


def upload_file(data: bytes, name: str = "passport.pdf", content_type: str = "application/pdf") -> Any:
    return SimpleUploadedFile(name, data, content_type=content_type)


def upload(api: Any, *files: Any, document_type: str = "passport", **extra: Any) -> Any:
    body: dict[str, Any] = {
        "document_type": document_type,
        "files": list(files) or [upload_file(pdf_bytes())],
    }
    return api.post("/api/kyc/submissions/", body, format="multipart", **extra)
