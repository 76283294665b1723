"""An upload about to hold rows for parents whose upload was sent with it gives way (SPEC 4:
dependency order among the uploads the server has): rolled back, back in the queue as if
never started, loaded after them. Bounded: only uploads received with it count, and only a
worker's run from stored bytes (which can run again) gives way."""

from __future__ import annotations

import io
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connections

from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import OrderItem, PendingOrderItem, Upload, UploadState
from apps.ingestions.services import (
    BlobReader,
    ParentsArriving,
    blob_store,
    parents_unfinished,
    upload_ingest_path,
    upload_process,
    upload_run,
)

pytestmark = pytest.mark.django_db(transaction=True)

ITEMS = [
    order_item_row(order_item_id=uid("i1"), order_id=uid("o1"), product_id=uid("p1")),
    order_item_row(order_item_id=uid("i2"), order_id=uid("o1"), product_id=uid("p1")),
]


def _stored(tenant, record_type: str, rows: list) -> Upload:
    """An upload received and queued, its bytes stored, that no worker has taken yet."""
    blob = blob_store(stream=io.BytesIO(ndjson_bytes(rows)))
    return Upload.objects.create(
        tenant=tenant,
        record_type=record_type,
        filename=f"{record_type}_1.ndjson",
        sha256=blob.sha256,
        size_bytes=blob.size_bytes,
        blob=blob,
        state=UploadState.QUEUED,
    )


@pytest.fixture
def parents_but_orders(tenant, ndjson):
    upload_ingest_path(tenant=tenant, path=ndjson("customers_0.ndjson", [customer_row()]))
    upload_ingest_path(tenant=tenant, path=ndjson("products_0.ndjson", [product_row()]))


def _run(upload: Upload) -> Upload:
    with BlobReader(upload.blob_id) as stream:
        return upload_process(upload_id=upload.id, stream=stream, give_way=True)


def test_an_upload_gives_way_to_its_parents_upload_sent_with_it(tenant, parents_but_orders):
    items = _stored(tenant, "order_items", ITEMS)
    _stored(tenant, "orders", [order_row()])  # received just after the items
    after = _run(items)
    assert after.state == UploadState.QUEUED
    assert (after.started_at, after.finished_at, after.rows_done, after.bytes_done) == (
        None,
        None,
        0,
        0,
    )
    assert after.row_counts == dict.fromkeys(after.row_counts, 0)
    assert not OrderItem.objects.filter(tenant=tenant).exists()
    assert not PendingOrderItem.objects.filter(tenant=tenant).exists()


def test_a_parents_upload_sent_much_later_is_not_waited_for(tenant, parents_but_orders):
    """A tenant that keeps sending parent files cannot starve a child upload."""
    items = _stored(tenant, "order_items", ITEMS)
    orders = _stored(tenant, "orders", [order_row()])
    Upload.objects.filter(id=orders.id).update(created_at=items.created_at + timedelta(hours=1))
    after = _run(items)
    assert after.state == UploadState.COMPLETED
    assert after.rows_pending == 2
    assert PendingOrderItem.objects.filter(tenant=tenant).count() == 2


def test_a_file_ingested_from_a_path_never_gives_way(tenant, parents_but_orders, ndjson):
    """It has no stored bytes to run again from: it loads now, holding what it must."""
    _stored(tenant, "orders", [order_row()])
    upload = upload_ingest_path(tenant=tenant, path=ndjson("order_items_1.ndjson", ITEMS)).upload
    assert upload.state == UploadState.COMPLETED
    assert upload.rows_pending == 2


def test_a_waiting_upload_waits_only_for_parents_sent_with_it(tenant, ndjson):
    """A parent upload received long after this one does not hold it back: it runs (here
    holding its orders, whose customer is in neither), instead of waiting for as long as
    the tenant keeps sending parent files."""
    orders = _stored(tenant, "orders", [order_row()])
    later = _stored(tenant, "customers", [customer_row(customer_id=uid("someone else"))])
    Upload.objects.filter(id=later.id).update(created_at=orders.created_at + timedelta(hours=1))
    assert upload_run(upload_id=orders.id).state == UploadState.COMPLETED
    assert Upload.objects.get(id=orders.id).rows_pending == 1


def test_a_parent_upload_sent_with_it_holds_an_upload_back(tenant):
    orders = _stored(tenant, "orders", [order_row()])
    _stored(tenant, "customers", [customer_row()])
    upload_run(upload_id=orders.id)
    assert Upload.objects.get(id=orders.id).state == UploadState.WAITING


@pytest.mark.parametrize(
    ("child", "parent", "held"),
    [
        ("orders", "customers", True),
        ("orders", "products", True),  # an earlier stage, though no parent of orders
        ("order_items", "customers", True),
        ("order_items", "orders", True),
        ("orders", "order_items", False),
        ("customers", "products", False),
    ],
)
def test_the_rule_holds_an_upload_back_for_each_earlier_stage_sent_with_it(
    tenant, child, parent, held
):
    """An unfinished upload of a type from an earlier stage of the dependency order
    (customers and products, then orders, then order items) holds an upload back."""
    upload = _stored(tenant, child, [])
    _stored(tenant, parent, [])
    assert parents_unfinished(upload) is held


def test_the_rule_lets_go_once_the_parents_upload_has_ended(tenant):
    orders = _stored(tenant, "orders", [order_row()])
    customers = _stored(tenant, "customers", [customer_row()])
    assert parents_unfinished(orders)
    Upload.objects.filter(id=customers.id).update(state=UploadState.COMPLETED_WITH_ERRORS)
    assert not parents_unfinished(orders)


def test_the_give_way_probe_asks_the_rule_on_the_connection_it_is_given(tenant):
    """`ParentsArriving`, the engine's `parents_coming`, sees a parent upload that arrived
    after the upload started, on a connection other than the caller's."""
    items = _stored(tenant, "order_items", ITEMS)
    side = connections.create_connection("default")

    @contextmanager
    def cursor():
        with side.cursor() as c:
            yield c

    try:
        probe = ParentsArriving(items, cursor=cursor)
        assert probe() is False
        _stored(tenant, "orders", [order_row()])
        assert probe() is True
    finally:
        side.close()
