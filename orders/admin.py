from django.contrib import admin

from orders.models import CustomerProfile, Invoice, Order, OrderLine


class OrderLineInline(admin.TabularInline[OrderLine, Order]):
    model = OrderLine
    extra = 0
    readonly_fields = ["position", "sku", "quantity", "unit_price", "line_total"]
    can_delete = False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin[Order]):
    list_display = ["id", "owner", "status", "currency", "total", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["=id", "owner__username"]
    readonly_fields = ["owner", "currency", "total", "created_at", "paid_at", "cancelled_at", "cancel_reason"]
    inlines = [OrderLineInline]


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin[Invoice]):
    list_display = ["order", "status", "display_currency", "converted_total", "generated_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in Invoice._meta.fields]


@admin.register(CustomerProfile)
class CustomerProfileAdmin(admin.ModelAdmin[CustomerProfile]):
    list_display = ["user", "display_currency"]
