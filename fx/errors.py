"""FX errors for the API (problem details). Provider failures during the sync are
jobs.errors.RetryableError / PermanentError, raised by fx/client.py."""

from config.problems import ApplicationError


class FxError(ApplicationError):
    code = "fx-error"


class RatesUnavailable(FxError):
    status_code = 503
    code = "fx-rates-unavailable"
    title = "No FX rates have been synced yet"
