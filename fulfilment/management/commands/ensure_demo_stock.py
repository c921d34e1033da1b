"""python manage.py ensure_demo_stock: stock for the local demo (`make run` only).

Tops up the SKUs the demo orders use, so `make demo` can fulfil them.
"""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fulfilment.models import StockItem

DEMO_STOCK = {"MUG-RED": 10_000, "MUG-BLUE": 10_000, "TEE-M": 1_000}


class Command(BaseCommand):
    help = "Top up the demo SKUs' stock (local development only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("ensure_demo_stock is for local development only (DEBUG=True).")
        for sku, units in DEMO_STOCK.items():
            item, _ = StockItem.objects.get_or_create(sku=sku)
            if item.available < units:
                StockItem.objects.filter(pk=item.pk).update(available=units)
        self.stdout.write(", ".join(f"{sku}: {units}" for sku, units in DEMO_STOCK.items()))
