"""The four tenant-scoped final tables and the pending holds (registered through
`models`, which imports them).

Final tables have composite primary keys `(tenant_id, <record>_id)`; the composite foreign
keys between them (which Django cannot declare) are added in SQL by the migration, so
PostgreSQL enforces them. Secondary indexes are kept to what is needed: each one is paid
for on every row of a bulk load.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from apps.core.exactjson import ExactDecoder
from apps.tenants.models import Tenant

__all__ = [
    "Customer",
    "FinalChange",
    "FinalChangeWake",
    "Order",
    "OrderFields",
    "OrderItem",
    "OrderItemFields",
    "PendingFields",
    "PendingOrder",
    "PendingOrderItem",
    "Product",
]


def _tenant_fk(*, constraint: bool):
    # No separate index: every primary key starts with tenant_id.
    return models.ForeignKey(
        Tenant,
        on_delete=models.DO_NOTHING,
        db_constraint=constraint,
        db_index=False,
        related_name="+",
    )


class Customer(models.Model):
    pk = models.CompositePrimaryKey("tenant_id", "customer_id")
    tenant = _tenant_fk(constraint=True)
    customer_id = models.UUIDField()
    name = models.CharField(max_length=255)
    email = models.CharField(max_length=254)
    metadata = models.JSONField(default=dict, decoder=ExactDecoder)  # numbers as stored
    created_at = models.DateTimeField()

    class Meta:
        db_table = "customers"

    def __str__(self) -> str:
        return str(self.customer_id)


class Product(models.Model):
    pk = models.CompositePrimaryKey("tenant_id", "product_id")
    tenant = _tenant_fk(constraint=True)
    product_id = models.UUIDField()
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    category_id = models.UUIDField(null=True, blank=True)
    active = models.BooleanField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "products"
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="products_price_gte_0")
        ]

    def __str__(self) -> str:
        return str(self.product_id)


class OrderFields(models.Model):
    order_id = models.UUIDField()
    external_order_id = models.CharField(max_length=128)
    customer_id = models.UUIDField()
    customer_name_snapshot = models.CharField(max_length=255)
    customer_email_snapshot = models.CharField(max_length=254)
    total_amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    order_status = models.CharField(max_length=32)
    order_date = models.DateTimeField()
    raw_payload = models.JSONField(null=True, blank=True, decoder=ExactDecoder)
    created_at = models.DateTimeField()

    class Meta:
        abstract = True


class Order(OrderFields):
    # (tenant_id, customer_id) -> customers is added by the migration in SQL.
    pk = models.CompositePrimaryKey("tenant_id", "order_id")
    tenant = _tenant_fk(constraint=False)  # implied by the customer foreign key

    class Meta:
        db_table = "orders"
        constraints = [
            models.CheckConstraint(condition=Q(total_amount__gte=0), name="orders_total_gte_0")
        ]

    def __str__(self) -> str:
        return str(self.order_id)


class OrderItemFields(models.Model):
    order_item_id = models.UUIDField()
    order_id = models.UUIDField()
    product_id = models.UUIDField()
    quantity = models.IntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    line_total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        abstract = True


class OrderItem(OrderItemFields):
    # (tenant_id, order_id) -> orders and (tenant_id, product_id) -> products: in SQL.
    pk = models.CompositePrimaryKey("tenant_id", "order_item_id")
    tenant = _tenant_fk(constraint=False)  # implied by the order foreign key

    class Meta:
        db_table = "order_items"
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1), name="order_items_quantity_gte_1"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="order_items_price_gte_0"),
            models.CheckConstraint(condition=Q(line_total__gte=0), name="order_items_total_gte_0"),
        ]

    def __str__(self) -> str:
        return str(self.order_item_id)


class PendingFields(models.Model):
    """A valid row held until its parent arrives; the newest upload's row for an id wins."""

    upload = models.ForeignKey("ingestions.Upload", on_delete=models.CASCADE, related_name="+")
    line = models.BigIntegerField()
    raw = models.TextField()
    held_at = models.DateTimeField()

    class Meta:
        abstract = True


class PendingOrder(OrderFields, PendingFields):
    pk = models.CompositePrimaryKey("tenant_id", "order_id")
    tenant = _tenant_fk(constraint=True)

    class Meta:
        db_table = "pending_orders"
        indexes = [models.Index(fields=["held_at"], name="pending_orders_held_at")]

    def __str__(self) -> str:
        return f"pending order {self.order_id}"


class PendingOrderItem(OrderItemFields, PendingFields):
    pk = models.CompositePrimaryKey("tenant_id", "order_item_id")
    tenant = _tenant_fk(constraint=True)

    class Meta:
        db_table = "pending_order_items"
        indexes = [models.Index(fields=["held_at"], name="pending_items_held_at")]

    def __str__(self) -> str:
        return f"pending item {self.order_item_id}"


class FinalChange(models.Model):
    """The ids of orders or order items one merge statement wrote (`engine.changes`), for
    the reader of the change feed (analytics) to catch up from; it deletes what it read."""

    id = models.BigAutoField(primary_key=True)
    tenant = _tenant_fk(constraint=False)
    record_type = models.CharField(max_length=16)
    keys = ArrayField(models.UUIDField())
    created_at = models.DateTimeField()

    class Meta:
        db_table = "final_changes"
        indexes = [models.Index(fields=["tenant", "id"], name="final_changes_tenant")]

    def __str__(self) -> str:
        return f"{len(self.keys)} {self.record_type} of tenant {self.tenant_id}"


class FinalChangeWake(models.Model):
    """The feed's reader has been sent for the tenant's changes (at `sent_at`): a merge
    meanwhile sends none of its own. The reader deletes it once it has read them all."""

    tenant = models.OneToOneField(Tenant, primary_key=True, on_delete=models.CASCADE)
    sent_at = models.DateTimeField()

    class Meta:
        db_table = "final_change_wakes"

    def __str__(self) -> str:
        return f"change feed reader of tenant {self.tenant_id} sent at {self.sent_at}"
