"""KYC errors: API problems (problem details) and the vendor client's classified failures."""

from config.problems import ApplicationError
from jobs.errors import PermanentError, RetryableError


# --- API (problem details) ------------------------------------------------------------
class KycError(ApplicationError):
    code = "kyc-error"


class SubmissionAlreadyOpen(KycError):
    status_code = 409
    code = "kyc-submission-open"
    title = "A KYC submission is already being checked"


class UploadTooLarge(KycError):
    status_code = 413
    code = "kyc-upload-too-large"
    title = "The upload is too large"


class UnsupportedDocument(KycError):
    status_code = 415
    code = "kyc-unsupported-document"
    title = "A document is not a PDF, JPEG or PNG file"


class DocumentInvalid(KycError):
    status_code = 400
    code = "kyc-document-invalid"
    title = "A document could not be accepted"


# --- the vendor client: classified once, where the HTTP call happens -----------------------
class VendorRetryableError(RetryableError):
    """5xx, 429, timeouts, connection errors: the check task retries with backoff."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.status_code = status_code


class VendorPermanentError(PermanentError):
    """4xx and malformed answers: retrying cannot help; the check is dead-lettered."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
