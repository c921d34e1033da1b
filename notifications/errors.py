"""SMTP failures, classified once: 4xx and connection trouble retry, 5xx is permanent."""

import smtplib
import socket

from core.errors import PermanentError, RetryableError

PERMANENT_FROM = 500


def classify_smtp(exc: Exception) -> tuple[Exception, int | None]:
    """Map an smtplib/socket error to RetryableError or PermanentError (and the SMTP code)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        code = max(codes) if codes else None
        kind = PermanentError if code and code >= PERMANENT_FROM else RetryableError
        return kind(f"recipient refused ({code})"), code
    if isinstance(exc, smtplib.SMTPResponseException):
        code = int(exc.smtp_code)
        kind = PermanentError if code >= PERMANENT_FROM else RetryableError
        return kind(f"SMTP {code}: {exc.smtp_error!r}"[:300]), code
    if isinstance(exc, smtplib.SMTPException | ConnectionError | socket.timeout | OSError):
        return RetryableError(f"SMTP connection problem: {type(exc).__name__}"), None
    raise exc
