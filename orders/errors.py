"""Domain errors of orders, as problem details."""

from core.problems import ApplicationError


class OrderError(ApplicationError):
    code = "order-error"


class OrderStateConflict(OrderError):
    status_code = 409
    code = "order-state-conflict"
    title = "The order is not in a state that allows this"


class InvoiceNotReady(OrderError):
    status_code = 404
    code = "invoice-not-ready"
    title = "The invoice has not been generated yet"


class AmountOutOfRange(OrderError):
    """A line or order total larger than an amount column holds (orders.currencies.max_amount)."""

    status_code = 400
    code = "amount-out-of-range"
    title = "An amount is larger than an order can hold"
