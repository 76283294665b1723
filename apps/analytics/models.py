"""What analytics reads instead of the final tables: a narrow copy of each order and each
order item, kept by `services.analytics_refresh` from the final tables' change feed.

An item's copy carries its order's date and currency, and an order's copy its items'
count and units, so no answer joins items to orders. `prev_order_date` is the date of the
same customer's order before this one (ties broken by order id), which turns "distinct
customers with an order in [a, b)" into a count of the orders in [a, b) whose previous
one is before a: each customer has exactly one such order there, their first.
`prev_in_currency` is the same among the customer's orders in that currency, for the
customers of one currency.
"""

from django.db import models

from apps.tenants.models import Tenant


def _tenant():
    # No constraint: these rows are copies, written only by the refresh; the tenant's
    # final rows carry the real keys.
    return models.ForeignKey(
        Tenant, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )


class OrderFact(models.Model):
    pk = models.CompositePrimaryKey("tenant_id", "order_id")
    tenant = _tenant()
    order_id = models.UUIDField()
    order_date = models.DateTimeField()
    customer_id = models.UUIDField()
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    items = models.IntegerField()
    units = models.BigIntegerField()
    prev_order_date = models.DateTimeField(null=True)
    prev_in_currency = models.DateTimeField(null=True)  # the same, among its currency's

    class Meta:
        db_table = "analytics_orders"
        indexes = [
            # a range's orders and every figure taken from them, from the index alone
            models.Index(
                fields=["tenant", "order_date"],
                include=[
                    *("customer_id", "currency", "total", "items", "units"),
                    *("prev_order_date", "prev_in_currency"),
                ],
                name="analytics_orders_date",
            ),
            models.Index(
                fields=["tenant", "customer_id", "order_date"], name="analytics_orders_customer"
            ),
        ]

    def __str__(self) -> str:
        return str(self.order_id)


class LineFact(models.Model):
    pk = models.CompositePrimaryKey("tenant_id", "order_item_id")
    tenant = _tenant()
    order_item_id = models.UUIDField()
    order_id = models.UUIDField()
    product_id = models.UUIDField()
    order_date = models.DateTimeField()
    currency = models.CharField(max_length=3)
    quantity = models.IntegerField()
    line_total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        db_table = "analytics_lines"
        # No index by order: an order's items are found by its date (the one their copies
        # carry), which keeps a bulk refresh to two indexes per item.
        indexes = [
            models.Index(
                fields=["tenant", "order_date"],
                include=["product_id", "currency", "quantity", "line_total"],
                name="analytics_lines_date",
            ),
        ]

    def __str__(self) -> str:
        return str(self.order_item_id)


class _ProductFigures(models.Model):
    tenant = _tenant()
    currency = models.CharField(max_length=3)
    product_id = models.UUIDField()
    lines = models.IntegerField()
    units = models.BigIntegerField()
    revenue = models.DecimalField(max_digits=20, decimal_places=2)

    class Meta:
        abstract = True


class ProductYearToDate(_ProductFigures):
    """A product's order items in a currency from the first of January to the end of
    `month` (UTC, its first instant), by their orders' dates: a row for every month from
    the group's first of that year through December, so that a group without a row in a
    month has had nothing yet that year. The figures of months a to b of one year are
    the row of b less the row of the month before a, two rows per group whatever the
    span (`sources`); December's row is the year's. `lines` 0 is nothing."""

    pk = models.CompositePrimaryKey("tenant_id", "month", "currency", "product_id")
    month = models.DateTimeField()

    class Meta:
        db_table = "analytics_product_ytd"

    def __str__(self) -> str:
        return f"{self.product_id} {self.currency} to {self.month:%Y-%m}"


class ProductTotal(_ProductFigures):
    """A product's order items in a currency over all time."""

    pk = models.CompositePrimaryKey("tenant_id", "currency", "product_id")

    class Meta:
        db_table = "analytics_product_totals"

    def __str__(self) -> str:
        return f"{self.product_id} {self.currency}"


class CustomerTotal(models.Model):
    """A customer's orders and revenue in a currency, over all their orders; `orders` 0
    is a group every order has left."""

    pk = models.CompositePrimaryKey("tenant_id", "customer_id", "currency")
    tenant = _tenant()
    customer_id = models.UUIDField()
    currency = models.CharField(max_length=3)
    orders = models.IntegerField()
    revenue = models.DecimalField(max_digits=20, decimal_places=2)

    class Meta:
        db_table = "analytics_customer_totals"
        # the groups by revenue, highest first: the walk of `ranking` for long ranges
        indexes = [
            models.Index(
                fields=["tenant", "-revenue", "customer_id", "currency"],
                name="analytics_customer_totals_top",
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.currency}"
