"""KYC errors for the API (problem details). Vendor failures are core.http's UpstreamRetryable /
UpstreamPermanent, raised by kyc/vendor.py."""

from core.problems import ApplicationError


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
