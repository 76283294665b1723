"""Merging: upsert counts, duplicates, identical re-sends, strict mode, the pending hold and
its expiry, and tenant isolation (SPEC 3 and 4)."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.ingestions.engine import RECORDS
from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import (
    Customer,
    Order,
    OrderItem,
    PendingOrder,
    PendingOrderItem,
    Product,
    Reject,
    Upload,
    UploadState,
)
from apps.ingestions.services import pending_expire, upload_ingest_path
from tests.factories import (
    assert_counts_add_up,
    counts_of,
    ingest_stored,
    raw_row,
    rejects_of,
)


def counts(**nonzero: int) -> dict[str, int]:
    """The full `rows` dict of an upload, zero where not given."""
    base = dict.fromkeys(
        ("total", "inserted", "updated", "unchanged", "rejected", "pending", "duplicates"), 0
    )
    return {**base, **nonzero}


def names(tenant) -> dict[uuid.UUID, str]:
    return dict(Customer.objects.filter(tenant=tenant).values_list("customer_id", "name"))


# --- upsert counts -------------------------------------------------------------------------


def test_the_last_occurrence_of_an_id_in_a_file_wins(tenant, ndjson, load):
    """Inside one file the last valid occurrence of an id is stored; the superseded ones are
    counted as duplicates and the counts add up to the total."""
    rows = [
        customer_row(customer_id=uid("c1"), name="first"),
        customer_row(customer_id=uid("c2"), name="only"),
        customer_row(customer_id=uid("c1"), name="second"),
        "",
        customer_row(customer_id=uid("c1"), name="last"),
    ]
    upload = load(tenant, ndjson("customers_1.ndjson", rows))
    assert counts_of(upload) == counts(total=4, inserted=2, duplicates=2)
    assert names(tenant) == {uuid.UUID(uid("c1")): "last", uuid.UUID(uid("c2")): "only"}


def test_a_later_invalid_occurrence_does_not_replace_a_valid_one(tenant, ndjson, load):
    """Only valid rows compete for last occurrence: a rejected later copy leaves the earlier
    valid one in place and is not a duplicate."""
    rows = [
        customer_row(name="valid"),
        customer_row(name="invalid", email="nope"),
    ]
    upload = load(tenant, ndjson("customers_1.ndjson", rows))
    assert counts_of(upload) == counts(total=2, inserted=1, rejected=1)
    assert names(tenant) == {uuid.UUID(uid("c1")): "valid"}


def test_a_reupload_counts_inserted_updated_and_unchanged_rows(tenant, ndjson, load):
    """A later upload replaces records: a changed row is updated, an equal one unchanged, a
    new one inserted."""
    first = [customer_row(customer_id=uid(f"c{i}"), name=f"n{i}") for i in range(3)]
    load(tenant, ndjson("customers_1.ndjson", first))
    second = [
        customer_row(customer_id=uid("c0"), name="renamed"),
        customer_row(customer_id=uid("c1"), name="n1"),
        customer_row(customer_id=uid("c3"), name="n3"),
    ]
    upload = load(tenant, ndjson("customers_2.ndjson", second))
    assert upload.state == UploadState.COMPLETED
    assert counts_of(upload) == counts(total=3, inserted=1, updated=1, unchanged=1)
    assert names(tenant) == {
        uuid.UUID(uid("c0")): "renamed",
        uuid.UUID(uid("c1")): "n1",
        uuid.UUID(uid("c2")): "n2",
        uuid.UUID(uid("c3")): "n3",
    }


def test_identical_rows_in_different_bytes_are_unchanged(tenant, ndjson, load):
    """Reordered keys, a decimal as number instead of string, the same instant in another
    offset and reordered JSON keys in an object are the same record: unchanged."""
    product = product_row(price="19.90", created_at="2024-01-02T03:04:05Z")
    customer = customer_row(metadata={"a": 1, "b": [1, 2]})
    load(tenant, ndjson("products_1.ndjson", [product]))
    load(tenant, ndjson("customers_1.ndjson", [customer]))

    same_product = dict(reversed(list(product.items())))
    same_product["created_at"] = "2024-01-02T04:04:05+01:00"
    same_product_line = raw_row(same_product, price="19.9")
    same_customer = {**dict(reversed(list(customer.items()))), "metadata": {"b": [1, 2], "a": 1}}

    products = load(tenant, ndjson("products_2.ndjson", [same_product_line]))
    customers = load(tenant, ndjson("customers_2.ndjson", [same_customer]))
    assert counts_of(products) == counts(total=1, unchanged=1)
    assert counts_of(customers) == counts(total=1, unchanged=1)
    assert Upload.objects.filter(tenant=tenant).count() == 4


def test_identical_bytes_are_not_processed_twice(tenant, other_tenant, ndjson):
    """Re-sending the same bytes for the same tenant and type returns the original upload
    (created False) and processes nothing, even under another file name."""
    data = [customer_row(name="original")]
    first = upload_ingest_path(tenant=tenant, path=ndjson("customers_1.ndjson", data))
    assert first.created is True
    upload_ingest_path(tenant=tenant, path=ndjson("customers_2.ndjson", [customer_row(name="v2")]))

    again = upload_ingest_path(tenant=tenant, path=ndjson("customers_copy.ndjson", data))
    assert again.created is False
    assert again.upload.id == first.upload.id
    assert again.upload.filename == "customers_1.ndjson"
    assert counts_of(again.upload) == counts(total=1, inserted=1)
    assert names(tenant) == {uuid.UUID(uid("c1")): "v2"}  # the old bytes were not re-applied
    assert Upload.objects.filter(tenant=tenant).count() == 2

    elsewhere = upload_ingest_path(tenant=other_tenant, path=ndjson("customers_1.ndjson", data))
    assert elsewhere.created is True
    assert elsewhere.upload.id != first.upload.id
    assert names(other_tenant) == {uuid.UUID(uid("c1")): "original"}


# --- strict mode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "rows", "bad_line", "field", "code"),
    [
        (
            "customers_1.ndjson",
            [customer_row(), customer_row(customer_id=uid("c2"), email="x"), customer_row()],
            2,
            "email",
            "invalid_email",
        ),
        (
            "order_items_1.ndjson",
            [order_item_row(), "", "{bad"],
            3,
            "",
            "invalid_json",
        ),
    ],
)
def test_a_strict_upload_with_a_bad_row_fails_and_loads_nothing(
    tenant, ndjson, load, filename, rows, bad_line, field, code
):
    """strict=true is all-or-nothing: one bad row fails the upload, inserts nothing, holds
    nothing, and still lists its rejects."""
    upload = load(tenant, ndjson(filename, rows), strict=True)
    assert upload.state == UploadState.FAILED
    assert upload.error_code == "strict_rejected"
    assert (upload.rows_inserted, upload.rows_pending, upload.rows_rejected) == (0, 0, 1)
    assert rejects_of(upload) == [(bad_line, field, code)]
    assert Customer.objects.filter(tenant=tenant).count() == 0
    assert OrderItem.objects.filter(tenant=tenant).count() == 0
    assert PendingOrderItem.objects.filter(tenant=tenant).count() == 0


def test_a_strict_upload_of_good_rows_completes(tenant, ndjson, load):
    """strict=true with every row valid loads them all and completes."""
    rows = [customer_row(customer_id=uid(f"c{i}")) for i in range(3)]
    upload = load(tenant, ndjson("customers_1.ndjson", rows), strict=True)
    assert (upload.state, upload.error_code) == (UploadState.COMPLETED, "")
    assert counts_of(upload) == counts(total=3, inserted=3)
    assert Customer.objects.filter(tenant=tenant).count() == 3


# --- upload state ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "state", "expected"),
    [
        ([order_row(customer_id=uid("c1"))], "completed", counts(total=1, inserted=1)),
        ([order_row(customer_id=uid("c9"))], "completed", counts(total=1, pending=1)),
        (
            [order_row(order_id=uid("o2"), currency="ZZZ"), order_row()],
            "completed_with_errors",
            counts(total=2, inserted=1, rejected=1),
        ),
        (["[]", "{"], "completed_with_errors", counts(total=2, rejected=2)),
        (["", "  "], "completed", counts()),
    ],
    ids=["all-good", "pending-only", "one-reject", "all-rejected", "blank-file"],
)
def test_an_upload_ends_completed_or_completed_with_errors(
    tenant, ndjson, load, rows, state, expected
):
    """Rejects make `completed_with_errors`; pending rows do not hold an upload back. The
    finish time and the final progress are filled in."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    upload = load(tenant, ndjson("orders_1.ndjson", rows))
    assert (upload.state, upload.error_code) == (state, "")
    assert counts_of(upload) == expected
    assert upload.finished_at is not None
    assert (upload.rows_done, upload.bytes_done) == (expected["total"], upload.size_bytes)
    assert upload.record_type == "orders"


def test_a_committed_upload_records_its_start_finish_and_progress(transactional_db, tenant, ndjson):
    """Outside a test transaction (as in production) the progress writer's own connection
    records the start, and the finished upload shows its rows, bytes and rate."""
    rows = [customer_row(customer_id=uid(f"c{i}")) for i in range(50)]
    upload = upload_ingest_path(tenant=tenant, path=ndjson("customers_1.ndjson", rows)).upload
    assert upload.state == UploadState.COMPLETED
    assert upload.started_at is not None
    assert upload.started_at <= upload.finished_at
    assert (upload.rows_done, upload.bytes_done) == (50, upload.size_bytes)
    assert upload.rows_per_second >= 0
    assert Customer.objects.filter(tenant=tenant).count() == 50


# --- the pending hold ----------------------------------------------------------------------

FILES = {
    "customers": [customer_row(customer_id=uid("c1")), customer_row(customer_id=uid("c2"))],
    "products": [product_row(product_id=uid("p1")), product_row(product_id=uid("p2"))],
    "orders": [
        order_row(order_id=uid("o1"), customer_id=uid("c1")),
        order_row(order_id=uid("o2"), customer_id=uid("c2")),
    ],
    "order_items": [
        order_item_row(order_item_id=uid("i1"), order_id=uid("o1"), product_id=uid("p1")),
        order_item_row(order_item_id=uid("i2"), order_id=uid("o1"), product_id=uid("p2")),
        order_item_row(order_item_id=uid("i3"), order_id=uid("o2"), product_id=uid("p2")),
    ],
}
NEEDS = {
    "customers": set(),
    "products": set(),
    "orders": {"customers"},
    "order_items": {"customers", "products", "orders"},
}


@pytest.mark.parametrize(
    "order", list(itertools.permutations(FILES)), ids=lambda o: ">".join(t[:4] for t in o)
)
def test_pending_rows_load_when_their_parents_arrive_in_any_order(tenant, ndjson, load, order):
    """Whatever order the four files come in, every row ends inserted: rows held for a
    missing parent move from pending to inserted on their own upload's counts."""
    uploads = {}
    for position, record_type in enumerate(order):
        rows = FILES[record_type]
        upload = load(tenant, ndjson(f"{record_type}_1.ndjson", rows))
        arrived = set(order[:position])
        held = 0 if NEEDS[record_type] <= arrived else len(rows)
        assert counts_of(upload) == counts(
            total=len(rows), inserted=len(rows) - held, pending=held
        ), record_type
        assert upload.state == UploadState.COMPLETED
        uploads[record_type] = upload
        for earlier in uploads.values():
            assert_counts_add_up(earlier)

    for record_type, upload in uploads.items():
        n = len(FILES[record_type])
        assert counts_of(upload) == counts(total=n, inserted=n), record_type
        assert upload.state == UploadState.COMPLETED
    assert Customer.objects.filter(tenant=tenant).count() == 2
    assert Product.objects.filter(tenant=tenant).count() == 2
    assert Order.objects.filter(tenant=tenant).count() == 2
    assert set(OrderItem.objects.filter(tenant=tenant).values_list("order_id", "product_id")) == {
        (uuid.UUID(uid("o1")), uuid.UUID(uid("p1"))),
        (uuid.UUID(uid("o1")), uuid.UUID(uid("p2"))),
        (uuid.UUID(uid("o2")), uuid.UUID(uid("p2"))),
    }
    assert PendingOrder.objects.count() == PendingOrderItem.objects.count() == 0


def test_a_held_row_resent_in_a_later_upload_replaces_the_earlier_one(tenant, ndjson, load):
    """The newest upload's row for an id is the one held; the older upload counts its row as
    a duplicate, and only the newest version loads when its parent arrives."""
    first = load(tenant, ndjson("orders_1.ndjson", [order_row(customer_id=uid("c1"))]))
    second = load(tenant, ndjson("orders_2.ndjson", [order_row(customer_id=uid("c9"))]))
    assert counts_of(first) == counts(total=1, duplicates=1)
    assert counts_of(second) == counts(total=1, pending=1)
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("c1"))]))
    assert Order.objects.filter(tenant=tenant).count() == 0
    load(tenant, ndjson("customers_2.ndjson", [customer_row(customer_id=uid("c9"))]))
    assert counts_of(second) == counts(total=1, inserted=1)
    assert counts_of(first) == counts(total=1, duplicates=1)
    order = Order.objects.get(tenant=tenant, order_id=uid("o1"))
    assert order.customer_id == uuid.UUID(uid("c9"))


def test_a_held_update_of_an_existing_record_counts_as_updated_when_resolved(tenant, ndjson, load):
    """A new version of a stored order that points to a customer not yet there is held (the
    stored version stays), then counts as updated once the customer arrives."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("c1"))]))
    load(tenant, ndjson("orders_1.ndjson", [order_row(customer_id=uid("c1"))]))
    moved = load(
        tenant, ndjson("orders_2.ndjson", [order_row(customer_id=uid("c2"), order_status="x")])
    )
    assert counts_of(moved) == counts(total=1, pending=1)
    assert Order.objects.get(tenant=tenant).order_status == "paid"
    load(tenant, ndjson("customers_2.ndjson", [customer_row(customer_id=uid("c2"))]))
    assert counts_of(moved) == counts(total=1, updated=1)
    order = Order.objects.get(tenant=tenant)
    assert (order.customer_id, order.order_status) == (uuid.UUID(uid("c2")), "x")


def test_duplicates_of_a_held_row_inside_a_file_are_counted(tenant, ndjson, load):
    """A file repeating a held id holds one row and counts the rest as duplicates."""
    rows = [order_row(order_status="a"), order_row(order_status="b")]
    upload = load(tenant, ndjson("orders_1.ndjson", rows))
    assert counts_of(upload) == counts(total=2, pending=1, duplicates=1)
    assert PendingOrder.objects.get(tenant=tenant).order_status == "b"


# --- orphan expiry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "item", "field"),
    [
        ({"products"}, order_item_row(), "order_id"),
        ({"customers", "orders"}, order_item_row(), "product_id"),
        (set(), order_item_row(), "order_id"),
    ],
    ids=["order-missing", "product-missing", "both-missing"],
)
def test_held_items_past_the_retention_window_become_orphan_rejects(
    tenant, ndjson, load, present, item, field
):
    """After the retention window a held item is rejected as `orphan` naming the missing
    parent; its upload's counts move from pending to rejected."""
    if "customers" in present:
        load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    if "products" in present:
        load(tenant, ndjson("products_1.ndjson", [product_row()]))
    if "orders" in present:
        load(tenant, ndjson("orders_1.ndjson", [order_row()]))
    upload = load(tenant, ndjson("order_items_1.ndjson", ["", item]))
    assert counts_of(upload) == counts(total=1, pending=1)

    later = timezone.now() + timedelta(hours=2)
    assert pending_expire(now=later, retention=timedelta(hours=1)) == 1
    assert rejects_of(upload) == [(2, field, "orphan")]
    assert counts_of(upload) == counts(total=1, rejected=1)
    assert upload.state == UploadState.COMPLETED_WITH_ERRORS
    assert PendingOrderItem.objects.count() == 0
    reject = Reject.objects.get(upload=upload)
    assert json.loads(reject.raw)["order_item_id"] == uid("i1")
    assert field in reject.message


@pytest.mark.parametrize(
    ("case", "strict", "compression"),
    [
        ("pipelined", False, None),
        ("whole-file after a repeated id", False, None),
        ("strict", True, None),
        ("gzip", False, "gzip"),
    ],
)
def test_an_orphan_reject_shows_the_line_as_sent(tenant, case, strict, compression):
    """An orphan's `raw` is the physical line the client sent (key order, spacing, decimal
    strings, offsets), read back from the stored bytes, whichever way the file loaded."""
    sent = [
        raw_row(
            order_row(order_id=uid(f"held-{n}"), customer_id=uid("nobody")),
            total_amount='"19.90"',
            order_date='"2024-03-01T10:00:00+02:00"',
        ).replace('", "', '",  "')
        for n in range(3)
    ]
    if case.startswith("whole-file"):
        sent.append(sent[0])  # a repeated id sends the load down the whole-file path
    data = ndjson_bytes(["", *sent], compression=compression)
    upload = ingest_stored(tenant, "orders_1.ndjson", data, strict=strict)
    expected = dict(enumerate(sent, start=2))
    if case.startswith("whole-file"):
        del expected[2]  # superseded by its later occurrence
    assert counts_of(upload)["pending"] == len(expected)

    assert pending_expire(retention=timedelta(0)) == len(expected)
    raws = dict(Reject.objects.filter(upload=upload, code="orphan").values_list("line", "raw"))
    assert raws == expected


def test_an_orphan_of_a_file_ingested_from_a_path_keeps_its_held_values(tenant, ndjson, load):
    """A local file leaves no stored bytes to read back: the orphan's `raw` is the held
    row's values as JSON."""
    upload = load(tenant, ndjson("orders_1.ndjson", [order_row(customer_id=uid("nobody"))]))
    assert pending_expire(retention=timedelta(0)) == 1
    raw = json.loads(Reject.objects.get(upload=upload).raw)
    assert (raw["order_id"], raw["customer_id"]) == (uid("o1"), uid("nobody"))
    assert set(raw) == set(RECORDS["orders"].columns)  # the row's fields, nothing of the hold


def test_an_expired_order_is_rejected_and_its_parent_arriving_later_loads_nothing(
    tenant, ndjson, load
):
    """Held orders expire too (field customer_id); the rest of their upload is untouched and
    a customer arriving after expiry does not resurrect the order."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("c2"))]))
    rows = [
        order_row(order_id=uid("o2"), customer_id=uid("c2")),
        order_row(order_id=uid("o1"), customer_id=uid("c1")),
    ]
    upload = load(tenant, ndjson("orders_1.ndjson", rows))
    assert counts_of(upload) == counts(total=2, inserted=1, pending=1)

    assert pending_expire(now=timezone.now() + timedelta(days=1), retention=timedelta(0)) == 1
    assert rejects_of(upload) == [(2, "customer_id", "orphan")]
    assert counts_of(upload) == counts(total=2, inserted=1, rejected=1)
    assert upload.state == UploadState.COMPLETED_WITH_ERRORS

    load(tenant, ndjson("customers_2.ndjson", [customer_row(customer_id=uid("c1"))]))
    assert list(Order.objects.filter(tenant=tenant).values_list("order_id", flat=True)) == [
        uuid.UUID(uid("o2"))
    ]
    assert counts_of(upload) == counts(total=2, inserted=1, rejected=1)


def test_rows_inside_the_retention_window_stay_pending(tenant, ndjson, load):
    """pending_expire leaves rows held for less than the window (default 7 days) alone."""
    upload = load(tenant, ndjson("orders_1.ndjson", [order_row()]))
    now = timezone.now()
    assert pending_expire(now=now + timedelta(hours=1), retention=timedelta(hours=2)) == 0
    assert pending_expire(now=now + timedelta(days=6)) == 0
    assert counts_of(upload) == counts(total=1, pending=1)
    assert upload.state == UploadState.COMPLETED
    assert PendingOrder.objects.filter(tenant=tenant).count() == 1

    assert pending_expire(now=now + timedelta(days=7, minutes=1)) == 1
    assert rejects_of(upload) == [(1, "customer_id", "orphan")]


def test_expiry_only_touches_rows_past_the_window(tenant, other_tenant, ndjson, load):
    """Each tenant's held rows expire on their own; another tenant's newer ones stay."""
    old = load(tenant, ndjson("orders_1.ndjson", [order_row()]))
    cutoff_now = timezone.now() + timedelta(hours=1)
    PendingOrder.objects.filter(tenant=tenant).update(held_at=cutoff_now - timedelta(hours=3))
    recent = load(other_tenant, ndjson("orders_1.ndjson", [order_row()]))
    PendingOrder.objects.filter(tenant=other_tenant).update(held_at=cutoff_now)
    assert pending_expire(now=cutoff_now, retention=timedelta(hours=2)) == 1
    assert counts_of(old) == counts(total=1, rejected=1)
    assert counts_of(recent) == counts(total=1, pending=1)


# --- tenants -----------------------------------------------------------------------------------


def test_the_same_uuid_in_two_tenants_never_collides(tenant, other_tenant, ndjson, load):
    """Keys are tenant-scoped: the same ids load separately for two tenants, each seeing its
    own values, and an update in one leaves the other alone."""
    for owner, name in ((tenant, "Acme's Ada"), (other_tenant, "Globex's Ada")):
        customers = load(owner, ndjson("customers_1.ndjson", [customer_row(name=name)]))
        orders = load(owner, ndjson("orders_1.ndjson", [order_row()]))
        assert counts_of(customers) == counts(total=1, inserted=1)
        assert counts_of(orders) == counts(total=1, inserted=1)
    load(tenant, ndjson("customers_2.ndjson", [customer_row(name="renamed")]))
    assert names(tenant) == {uuid.UUID(uid("c1")): "renamed"}
    assert names(other_tenant) == {uuid.UUID(uid("c1")): "Globex's Ada"}
    assert Customer.objects.filter(customer_id=uid("c1")).count() == 2
    assert Order.objects.filter(order_id=uid("o1")).count() == 2


def test_a_tenant_cannot_reference_another_tenants_customer(tenant, other_tenant, ndjson, load):
    """An order pointing to a customer id that only another tenant has stays pending, even
    when that tenant loads more customers, until its own tenant sends the customer."""
    load(other_tenant, ndjson("customers_1.ndjson", [customer_row()]))
    upload = load(tenant, ndjson("orders_1.ndjson", [order_row()]))
    assert counts_of(upload) == counts(total=1, pending=1)
    load(other_tenant, ndjson("customers_2.ndjson", [customer_row(name="again")]))
    assert counts_of(upload) == counts(total=1, pending=1)
    assert Order.objects.count() == 0

    load(tenant, ndjson("customers_1.ndjson", [customer_row()]))
    assert counts_of(upload) == counts(total=1, inserted=1)
    assert Order.objects.filter(tenant=tenant).count() == 1
    assert Order.objects.filter(tenant=other_tenant).count() == 0


def test_an_item_cannot_reference_another_tenants_order_or_product(
    tenant, other_tenant, ndjson, load
):
    """Items are held when their order and product exist only under another tenant."""
    load(other_tenant, ndjson("customers_1.ndjson", [customer_row()]))
    load(other_tenant, ndjson("products_1.ndjson", [product_row()]))
    load(other_tenant, ndjson("orders_1.ndjson", [order_row()]))
    upload = load(tenant, ndjson("order_items_1.ndjson", [order_item_row()]))
    assert counts_of(upload) == counts(total=1, pending=1)
    assert OrderItem.objects.count() == 0
