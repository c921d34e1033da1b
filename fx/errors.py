"""FX errors for the API (problem details). Provider failures during the sync are
jobs.errors.RetryableError / PermanentError, raised by fx/client.py."""

from core.problems import ApplicationError


class FxError(ApplicationError):
    code = "fx-error"


class RatesUnavailable(FxError):
    # 404, not 503: "no rates for this base yet" is a fact about the data, not an outage,
    # and clients (and the schema fuzzing) must not see a server error for it.
    status_code = 404
    code = "fx-rates-unavailable"
    title = "No FX rates have been synced yet"
