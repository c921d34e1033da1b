"""Domain errors of fulfilment: API problems, and the permanent failures of its steps."""

from core.errors import PermanentError
from core.http import UpstreamPermanent
from core.problems import ApplicationError


class FulfilmentConflict(ApplicationError):
    status_code = 409
    code = "fulfilment-conflict"
    title = "The order cannot be fulfilled now"


class InsufficientStock(PermanentError):
    """Not enough units of a SKU: no retry can help (a person restocks, then retries the step)."""

    code = "insufficient-stock"


class PaymentDeclined(UpstreamPermanent):
    """The provider refused the capture for good (402)."""

    code = "payment-declined"
