"""Reads of the delivery ledger."""

from notifications.models import EmailDelivery


def email_status(*, template: str, ledger_key: str) -> str | None:
    return (
        EmailDelivery.objects.filter(template=template, ledger_key=ledger_key)
        .values_list("status", flat=True)
        .first()
    )
