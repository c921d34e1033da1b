"""What an uploaded document is, decided from its bytes; and the upload size limits.

The type comes from the file's first bytes (magic numbers), never from its name or the
Content-Type the client sent:

    PDF   %PDF-                      (and a %%EOF trailer in the last 1024 bytes)
    JPEG  FF D8 FF
    PNG   89 50 4E 47 0D 0A 1A 0A

Images are opened lazily with Pillow (only the header is parsed), the format Pillow
finds must match the sniffed one, width and height must be in range, and the pixel
count is capped before anything is decoded (decompression bombs). PNGs are then
verified (chunk checksums) without decoding their pixels.

Sizes are enforced while the request streams in (`UploadLimitHandler`): a file that
grows past KYC_MAX_FILE_BYTES is dropped on the spot instead of being buffered, and a
request past the total limit stops being read.
"""

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest
from PIL import Image, UnidentifiedImageError

from kyc.errors import DocumentInvalid, UnsupportedDocument, UploadTooLarge
from kyc.models import Document

FILES_FIELD = "files"
MAGIC: list[tuple[bytes, str]] = [
    (b"%PDF-", Document.Kind.PDF),
    (b"\xff\xd8\xff", Document.Kind.JPEG),
    (b"\x89PNG\r\n\x1a\n", Document.Kind.PNG),
]
PILLOW_FORMAT: dict[str, str] = {Document.Kind.JPEG: "JPEG", Document.Kind.PNG: "PNG"}
CONTENT_TYPE: dict[str, str] = {
    Document.Kind.PDF: "application/pdf",
    Document.Kind.JPEG: "image/jpeg",
    Document.Kind.PNG: "image/png",
}
PDF_TRAILER_WINDOW = 1024


@dataclass(frozen=True)
class InspectedDocument:
    file: UploadedFile
    kind: str  # Document.Kind
    size: int
    sha256: str
    width: int | None = None
    height: int | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE[self.kind]


class Rejected(Exception):
    """A verdict on one file, raised and caught inside this module."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def sniff(head: bytes) -> str | None:
    """The document kind the leading bytes announce, or None."""
    return next((kind for magic, kind in MAGIC if head.startswith(magic)), None)


def _read_at(file: UploadedFile, offset: int, length: int) -> bytes:
    file.seek(offset)
    data = file.read(length)
    file.seek(0)
    return bytes(data)


def _sha256(file: UploadedFile) -> str:
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def _check_pdf(file: UploadedFile, size: int) -> None:
    tail = _read_at(file, max(0, size - PDF_TRAILER_WINDOW), PDF_TRAILER_WINDOW)
    if b"%%EOF" not in tail:
        raise Rejected("The PDF is truncated or damaged (no %%EOF trailer).")


def _check_image(file: UploadedFile, kind: str) -> tuple[int, int]:
    expected = PILLOW_FORMAT[kind]
    low, high = settings.KYC_IMAGE_MIN_SIDE, settings.KYC_IMAGE_MAX_SIDE
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            file.seek(0)
            with Image.open(file, formats=[expected]) as image:  # parses the header only
                if image.format != expected:
                    raise Rejected(f"The file starts like a {kind.upper()} but is not one.")
                width, height = image.size
                if width * height > settings.KYC_IMAGE_MAX_PIXELS:
                    raise Rejected(f"The image has too many pixels ({width}x{height}).")
                if not (low <= width <= high and low <= height <= high):
                    raise Rejected(
                        f"The image is {width}x{height} pixels; each side must be {low}-{high} pixels."
                    )
                image.verify()  # structure and checksums, without decoding the pixels
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected("The image has too many pixels.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Rejected(f"The file is not a readable {kind.upper()} image.") from exc
    finally:
        file.seek(0)
    return width, height


def inspect(file: UploadedFile) -> InspectedDocument:
    """Decide what one uploaded file is; raises Rejected with a message for the client."""
    size = int(file.size or 0)
    if size == 0:
        raise Rejected("The file is empty.")
    if size > settings.KYC_MAX_FILE_BYTES:  # the upload handler drops these; a second line of defence
        raise Rejected(f"The file is larger than {settings.KYC_MAX_FILE_BYTES} bytes.")
    kind = sniff(_read_at(file, 0, 16))
    if kind is None:
        raise Rejected(
            "Only PDF, JPEG and PNG documents are accepted (decided from the file's content, "
            "not its name or declared type).",
            unsupported=True,
        )
    width = height = None
    if kind == Document.Kind.PDF:
        _check_pdf(file, size)
    else:
        width, height = _check_image(file, kind)
    return InspectedDocument(
        file=file, kind=kind, size=size, sha256=_sha256(file), width=width, height=height
    )


def inspect_all(files: list[UploadedFile]) -> list[InspectedDocument]:
    """Every file, or an error naming each bad one: 415 if any type is unsupported, else 400."""
    accepted: list[InspectedDocument] = []
    errors: dict[str, list[str]] = {}
    unsupported = False
    for index, file in enumerate(files):
        try:
            accepted.append(inspect(file))
        except Rejected as rejected:
            errors[f"{FILES_FIELD}.{index}"] = [str(rejected)]
            unsupported = unsupported or rejected.unsupported
    if errors:
        error = UnsupportedDocument if unsupported else DocumentInvalid
        raise error("See `errors` for the documents that were not accepted.", errors=errors)
    return accepted


# --- limits while the request streams in --------------------------------------------------
def max_request_bytes() -> int:
    """The largest multipart body worth reading: every file at its limit, plus the form fields."""
    return int(settings.KYC_MAX_FILES * settings.KYC_MAX_FILE_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class UploadLimitHandler(FileUploadHandler):
    """First in the handler chain: counts bytes per file and in total while they arrive.

    A file past the size limit is skipped at once (Django discards the rest of it rather
    than buffering or spooling it); past the total, reading stops. The view raises the
    recorded problem afterwards, so the client gets one problem-details answer.
    """

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.max_file = int(settings.KYC_MAX_FILE_BYTES)
        self.max_files = int(settings.KYC_MAX_FILES)
        self.max_total = max_request_bytes()
        self.problems: dict[str, list[str]] = {}
        self.too_large = False
        self.files_seen = 0
        self.index = -1
        self.file_bytes = 0
        self.total_bytes = 0

    def _problem(self, field: str, message: str, *, too_large: bool = False) -> None:
        self.problems.setdefault(field, []).append(message)
        self.too_large = self.too_large or too_large

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, *args, **kwargs)
        self.file_bytes = 0
        if field_name != FILES_FIELD:
            self._problem(field_name, f"Unexpected file field; send documents as `{FILES_FIELD}`.")
            raise SkipFile
        self.index = self.files_seen
        self.files_seen += 1
        if self.files_seen > self.max_files:
            if self.files_seen == self.max_files + 1:
                self._problem(FILES_FIELD, f"Send at most {self.max_files} files.")
            raise SkipFile

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.file_bytes += len(raw_data)
        self.total_bytes += len(raw_data)
        if self.total_bytes > self.max_total:
            self._problem(FILES_FIELD, f"The upload is larger than {self.max_total} bytes.", too_large=True)
            raise StopUpload(connection_reset=True)  # stop reading the body
        if self.file_bytes > self.max_file:
            self._problem(
                f"{FILES_FIELD}.{self.index}",
                f"The file is larger than {self.max_file} bytes.",
                too_large=True,
            )
            raise SkipFile  # the rest of this file is discarded as it arrives
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (memory or temporary file) builds the UploadedFile

    def raise_problems(self) -> None:
        if not self.problems:
            return
        detail = "See `errors` for what was not accepted."
        if self.too_large:
            raise UploadTooLarge(detail, errors=self.problems)
        raise DocumentInvalid(detail, errors=self.problems)
