"""The pipelined load across many chunks (SPEC 4): the fast plain INSERT, the switch to the
careful merge, the whole-file merge of a file that repeats an id, pending rows, rejects,
strict mode and unseekable streams give exactly the rows and counts of one big chunk.

Chunks are made 3 rows long (`stage.CHUNK_ROWS`, read when a load starts), so a dozen
lines span four chunks. Which way a load went is read from the engine's debug log."""

from __future__ import annotations

import io
import logging
import re
import signal
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from apps.ingestions.engine import load_upload
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
    UploadState,
)
from apps.ingestions.services import fingerprint, upload_process, upload_register
from tests.factories import assert_counts_add_up, counts_of, raw_row, rejects_of

CHUNK_ROWS = 3
PIPELINED = "pipelined"
WHOLE_FILE = "whole-file"
AFTER_REPEAT = "whole-file after a repeated id"

_LABELS = {
    uuid.UUID(uid(label)): label
    for label in [f"{p}{i}" for p in "cdopi" for i in range(40)] + ["oa", "ob"]
}


# --- helpers ---------------------------------------------------------------------------------


def counts(**nonzero: int) -> dict[str, int]:
    """The full `rows` dict of an upload, zero where not given."""
    base = dict.fromkeys(
        ("total", "inserted", "updated", "unchanged", "rejected", "pending", "duplicates"), 0
    )
    return {**base, **nonzero}


def customer(label: str, name: str | None = None, **fields: Any) -> dict[str, Any]:
    return customer_row(customer_id=uid(label), name=name or label, **fields)


def product(label: str, **fields: Any) -> dict[str, Any]:
    return product_row(product_id=uid(label), sku=label, **fields)


def order(label: str, customer_label: str, **fields: Any) -> dict[str, Any]:
    return order_row(order_id=uid(label), customer_id=uid(customer_label), **fields)


def item(label: str, order_label: str, product_label: str) -> dict[str, Any]:
    return order_item_row(
        order_item_id=uid(label), order_id=uid(order_label), product_id=uid(product_label)
    )


def customers_of(tenant) -> dict[str, str]:
    """The tenant's stored customers as {label: name}."""
    rows = Customer.objects.filter(tenant=tenant).values_list("customer_id", "name")
    return {_LABELS[c]: name for c, name in rows}


def orders_of(tenant) -> dict[str, str]:
    """The tenant's stored orders as {order label: customer label}."""
    rows = Order.objects.filter(tenant=tenant).values_list("order_id", "customer_id")
    return {_LABELS[o]: _LABELS[c] for o, c in rows}


def held_orders_of(tenant) -> dict[str, tuple[str, str, int]]:
    """The tenant's held orders as {order label: (customer label, filename, line)}."""
    rows = PendingOrder.objects.filter(tenant=tenant).values_list(
        "order_id", "customer_id", "upload__filename", "line"
    )
    return {_LABELS[o]: (_LABELS[c], name, line) for o, c, name, line in rows}


def snapshot(tenant, upload) -> dict[str, Any]:
    """Everything a load leaves behind for a tenant, comparable across tenants."""
    fields = ("customer_id", "name", "email", "metadata", "created_at")
    order_fields = [f.name for f in Order._meta.concrete_fields if f.name != "tenant"]
    return {
        "counts": counts_of(upload),
        "state": upload.state,
        "rejects": rejects_of(upload),
        "customers": sorted(Customer.objects.filter(tenant=tenant).values_list(*fields)),
        "orders": sorted(Order.objects.filter(tenant=tenant).values_list(*order_fields)),
        "held": sorted(
            PendingOrder.objects.filter(tenant=tenant).values_list(
                "order_id", "customer_id", "order_status", "line"
            )
        ),
    }


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of CHUNK_ROWS rows for every load in the test."""
    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", CHUNK_ROWS)


@pytest.fixture
def last_path(caplog):
    """The way the engine took through its latest load, from its debug log line."""
    caplog.set_level(logging.DEBUG, logger="apps.ingestions.engine.load")
    pattern = re.compile(r"loaded \d+ rows of \w+ \((.+)\) in ")

    def latest() -> str | None:
        found = [m.group(1) for r in caplog.records if (m := pattern.match(r.getMessage()))]
        return found[-1] if found else None

    return latest


class Unseekable:
    """A byte stream that can only be read forward, like a socket or a pipe."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("seek")

    def tell(self):
        raise io.UnsupportedOperation("tell")


# --- the fast way ----------------------------------------------------------------------------

PARENTS = {
    "customers": [],
    "products": [],
    "orders": [("customers_0.ndjson", [customer("c0"), customer("c1")])],
    "order_items": [
        ("customers_0.ndjson", [customer("c0")]),
        ("products_0.ndjson", [product("p0"), product("p1")]),
        ("orders_0.ndjson", [order("o0", "c0"), order("o1", "c0")]),
    ],
}
TEN_ROWS = {
    "customers": [customer(f"c{i}") for i in range(10)],
    "products": [product(f"p{i}") for i in range(10)],
    "orders": [order(f"o{i}", f"c{i % 2}") for i in range(10)],
    "order_items": [item(f"i{i}", f"o{i % 2}", f"p{i // 5}") for i in range(10)],
}
MODELS = {
    "customers": (Customer, "customer_id"),
    "products": (Product, "product_id"),
    "orders": (Order, "order_id"),
    "order_items": (OrderItem, "order_item_id"),
}


@pytest.mark.parametrize("record_type", list(TEN_ROWS))
def test_a_file_of_new_rows_over_many_chunks_inserts_every_row(
    tenant, ndjson, load, small_chunks, last_path, record_type
):
    """Ten new rows whose parents all exist (four chunks, with blank lines) go in on the
    pipelined path: all inserted, nothing else counted, nothing rejected."""
    for filename, rows in PARENTS[record_type]:
        load(tenant, ndjson(filename, rows))
    rows = TEN_ROWS[record_type]
    lines = ["", *rows[:4], "", "  ", *rows[4:], ""]
    upload = load(tenant, ndjson(f"{record_type}_1.ndjson", lines))
    assert last_path() == PIPELINED
    assert upload.state == UploadState.COMPLETED
    assert counts_of(upload) == counts(total=10, inserted=10)
    assert rejects_of(upload) == []
    model, key = MODELS[record_type]
    stored = model.objects.filter(tenant=tenant).values_list(key, flat=True)
    assert sorted(_LABELS[k] for k in stored) == sorted(_LABELS[uuid.UUID(r[key])] for r in rows)


# --- ids repeated in one file ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected", "names"),
    [
        pytest.param(
            [customer("c0"), customer("c1", "first"), customer("c2")]
            + [customer("c3"), customer("c4"), customer("c5")]
            + [customer("c6"), customer("c1", "last"), customer("c7")],
            counts(total=9, inserted=8, duplicates=1),
            {"c1": "last"},
            id="chunk-1-again-in-chunk-3",
        ),
        pytest.param(
            [customer("c0"), customer("c1"), customer("c2")]
            + [customer("c3", "first"), customer("c4"), customer("c3", "last")]
            + [customer("c5"), customer("c6")],
            counts(total=8, inserted=7, duplicates=1),
            {"c3": "last"},
            id="twice-inside-chunk-2",
        ),
        pytest.param(
            [customer("c0"), customer("c1", "first"), customer("c2")]
            + [customer("c3", "first"), "", customer("c4"), customer("c3", "last")]
            + [customer("c1", "second"), customer("c5"), customer("c6")]
            + [customer("c1", "last")],
            counts(total=10, inserted=7, duplicates=3),
            {"c1": "last", "c3": "last"},
            id="across-and-inside-chunks",
        ),
        pytest.param(
            [customer("c0"), customer("c1", "first"), customer("c2")]
            + [customer("c3"), customer("c4"), customer("c5")]
            + [customer_row(customer_id=uid("c1").upper(), name="last")],
            counts(total=7, inserted=6, duplicates=1),
            {"c1": "last"},
            id="same-uuid-in-capitals",
        ),
    ],
)
def test_an_id_repeated_in_the_fast_way_keeps_its_last_occurrence(
    tenant, ndjson, load, small_chunks, last_path, lines, expected, names
):
    """An id seen again (in a later chunk or in the same one) makes the file be merged whole:
    the last occurrence is stored, the others counted as duplicates, and rows outside the
    file are left as they were."""
    before = load(tenant, ndjson("customers_0.ndjson", [customer("c9", "kept")]))
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert last_path() == AFTER_REPEAT
    assert (upload.state, counts_of(upload)) == (UploadState.COMPLETED, expected)
    assert rejects_of(upload) == []
    stored = {f"c{i}": f"c{i}" for i in range(expected["inserted"])}
    assert customers_of(tenant) == {**stored, **names, "c9": "kept"}
    assert counts_of(before) == counts(total=1, inserted=1)


@pytest.mark.parametrize(
    ("chunk_3", "names"),
    [
        pytest.param(
            [customer("c5"), customer("c1", "last"), customer("c6")],
            {"c1": "last"},
            id="id-of-a-fast-chunk",
        ),
        pytest.param(
            [customer("c5"), customer("c3", "last"), customer("c6")],
            {"c3": "last"},
            id="new-id-of-a-careful-chunk",
        ),
        pytest.param(
            [customer("c5"), customer("c9", "last"), customer("c6")],
            {"c9": "last"},
            id="existing-id-of-a-careful-chunk",
        ),
        pytest.param(
            [customer("c5", "first"), customer("c5", "last"), customer("c6")],
            {"c5": "last"},
            id="twice-inside-a-careful-chunk",
        ),
    ],
)
def test_an_id_repeated_after_the_switch_to_careful_keeps_its_last_occurrence(
    tenant, ndjson, load, small_chunks, last_path, chunk_3, names
):
    """Chunk 2 updates an existing customer (the careful way from there on); an id repeated
    in chunk 3 still makes the last occurrence win, counted once as a duplicate."""
    before = load(tenant, ndjson("customers_0.ndjson", [customer("c9", "old")]))
    lines = (
        [customer("c0"), customer("c1"), customer("c2")]
        + [customer("c3"), customer("c9", "new"), customer("c4")]
        + chunk_3
    )
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert last_path() == AFTER_REPEAT
    assert counts_of(upload) == counts(total=9, inserted=7, updated=1, duplicates=1)
    expected = {f"c{i}": f"c{i}" for i in range(7)} | {"c9": "new"}
    assert customers_of(tenant) == {**expected, **names}
    assert counts_of(before) == counts(total=1, inserted=1)


@pytest.mark.parametrize(
    ("o3_first", "o3_last", "expected", "stored", "held"),
    [
        pytest.param(
            "c9",
            "c2",
            counts(total=9, inserted=8, duplicates=1),
            {"o3": "c2"},
            {},
            id="held-then-loadable",
        ),
        pytest.param(
            "c2",
            "c9",
            counts(total=9, inserted=7, pending=1, duplicates=1),
            {},
            {"o3": ("c9", "orders_1.ndjson", 8)},
            id="loadable-then-held",
        ),
    ],
)
def test_an_order_repeated_after_a_held_one_keeps_its_last_occurrence(
    tenant, ndjson, load, small_chunks, last_path, o3_first, o3_last, expected, stored, held
):
    """A missing customer in chunk 2 turns the careful way on; an order id repeated in
    chunk 3 ends as its last occurrence: inserted when its customer exists, else held."""
    load(tenant, ndjson("customers_0.ndjson", [customer(f"c{i}") for i in range(3)]))
    lines = (
        [order("o0", "c0"), order("o1", "c1"), order("o2", "c2")]
        + [order("o3", o3_first), order("o4", "c0"), order("o5", "c1")]
        + [order("o6", "c2"), order("o3", o3_last), order("o7", "c0")]
    )
    upload = load(tenant, ndjson("orders_1.ndjson", lines))
    assert last_path() == AFTER_REPEAT
    assert counts_of(upload) == expected
    others = {"o0": "c0", "o1": "c1", "o2": "c2", "o4": "c0", "o5": "c1", "o6": "c2", "o7": "c0"}
    assert orders_of(tenant) == {**others, **stored}
    assert held_orders_of(tenant) == held


# --- the careful way after fast chunks -------------------------------------------------------


def test_a_reupload_that_meets_existing_ids_only_in_later_chunks_counts_them_exactly(
    tenant, ndjson, load, small_chunks, last_path
):
    """Chunks 1-2 are new (fast), chunks 3-4 mix changed, unchanged and new rows (careful
    from chunk 3): exact inserted, updated and unchanged counts, and every row as sent."""
    first = load(tenant, ndjson("customers_0.ndjson", [customer(f"c{i}") for i in range(6)]))
    lines = (
        [customer("d0"), customer("d1"), customer("d2")]
        + [customer("d3"), customer("d4"), customer("d5")]
        + [customer("c0", "renamed"), customer("c1"), customer("d6")]
        + ["", customer("c2"), customer("c3", email="new@example.com"), customer("d7")]
        + [customer("c4", "renamed")]
    )
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert last_path() == PIPELINED
    assert counts_of(upload) == counts(total=13, inserted=8, updated=3, unchanged=2)
    assert customers_of(tenant) == (
        {f"c{i}": f"c{i}" for i in range(6)}
        | {f"d{i}": f"d{i}" for i in range(8)}
        | {"c0": "renamed", "c4": "renamed"}
    )
    assert Customer.objects.get(tenant=tenant, customer_id=uid("c3")).email == "new@example.com"
    assert counts_of(first) == counts(total=6, inserted=6)


def test_orders_whose_customers_miss_only_in_later_chunks_are_held_then_loaded(
    tenant, ndjson, load, small_chunks, last_path
):
    """Chunks 1-2 go in the fast way; chunks 3-4 hold the orders of missing customers (exact
    pending, with their lines) and insert the rest. When the customers arrive, the held
    orders load and the orders upload's counts move from pending to inserted."""
    load(tenant, ndjson("customers_0.ndjson", [customer(f"c{i}") for i in range(4)]))
    lines = (
        [order("o0", "c0"), order("o1", "c1"), order("o2", "c2")]
        + [order("o3", "c3"), order("o4", "c0"), order("o5", "c1")]
        + [order("o6", "c8"), order("o7", "c2"), order("o8", "c9")]
        + [order("o9", "c8"), "", order("o10", "c3")]
    )
    upload = load(tenant, ndjson("orders_1.ndjson", lines))
    assert last_path() == PIPELINED
    assert (upload.state, counts_of(upload)) == (
        UploadState.COMPLETED,
        counts(total=11, inserted=8, pending=3),
    )
    loaded = {f"o{i}": f"c{i % 4}" for i in (0, 1, 2, 3, 4, 5)} | {"o7": "c2", "o10": "c3"}
    assert orders_of(tenant) == loaded
    assert held_orders_of(tenant) == {
        "o6": ("c8", "orders_1.ndjson", 7),
        "o8": ("c9", "orders_1.ndjson", 9),
        "o9": ("c8", "orders_1.ndjson", 10),
    }

    c8 = load(tenant, ndjson("customers_1.ndjson", [customer("c8")]))
    assert counts_of(c8) == counts(total=1, inserted=1)
    assert counts_of(upload) == counts(total=11, inserted=10, pending=1)
    assert held_orders_of(tenant) == {"o8": ("c9", "orders_1.ndjson", 9)}

    load(tenant, ndjson("customers_2.ndjson", [customer("c9")]))
    assert counts_of(upload) == counts(total=11, inserted=11)
    assert orders_of(tenant) == loaded | {"o6": "c8", "o8": "c9", "o9": "c8"}
    assert PendingOrder.objects.filter(tenant=tenant).count() == 0


def test_items_whose_parents_miss_only_in_later_chunks_are_held_then_loaded(
    tenant, ndjson, load, small_chunks, last_path
):
    """Items of a missing product (chunk 3) or a missing order (chunk 4) are held, the others
    inserted; the missing parents arriving later load them."""
    load(tenant, ndjson("customers_0.ndjson", [customer("c0")]))
    load(tenant, ndjson("products_0.ndjson", [product("p0")]))
    load(tenant, ndjson("orders_0.ndjson", [order("o0", "c0")]))
    lines = [item(f"i{i}", "o0", "p0") for i in range(6)] + [
        item("i6", "o0", "p1"),
        item("i7", "o0", "p0"),
        item("i8", "o0", "p0"),
        item("i9", "o1", "p0"),
    ]
    upload = load(tenant, ndjson("order_items_1.ndjson", lines))
    assert last_path() == PIPELINED
    assert counts_of(upload) == counts(total=10, inserted=8, pending=2)
    held = PendingOrderItem.objects.filter(tenant=tenant).values_list("order_item_id", "line")
    assert sorted((_LABELS[i], line) for i, line in held) == [("i6", 7), ("i9", 10)]

    load(tenant, ndjson("products_1.ndjson", [product("p1")]))
    assert counts_of(upload) == counts(total=10, inserted=9, pending=1)
    load(tenant, ndjson("orders_1.ndjson", [order("o1", "c0")]))
    assert counts_of(upload) == counts(total=10, inserted=10)
    assert OrderItem.objects.filter(tenant=tenant).count() == 10


# --- rejects ---------------------------------------------------------------------------------

BAD_EMAIL = customer("c1", email="nope")
MISSING_NAME = {k: v for k, v in customer("c8").items() if k != "name"}
BAD_ID = customer_row(customer_id="nope")
BAD_TIME = customer("c9", created_at="yesterday")
REJECTS = [
    (2, "email", "invalid_email"),
    (4, "", "invalid_json"),
    (8, "", "not_an_object"),
    (9, "name", "missing_field"),
    (10, "customer_id", "invalid_uuid"),
    (13, "created_at", "invalid_timestamp"),
]


@pytest.mark.parametrize(
    ("first", "line_11", "path", "expected"),
    [
        pytest.param(
            "c0", customer("c6"), PIPELINED, counts(total=12, inserted=6, rejected=6), id="fast"
        ),
        pytest.param(
            "c7",
            customer("c6"),
            PIPELINED,
            counts(total=12, inserted=5, unchanged=1, rejected=6),
            id="careful-from-chunk-1",
        ),
        pytest.param(
            "c0",
            customer("c2", "last"),
            AFTER_REPEAT,
            counts(total=12, inserted=5, rejected=6, duplicates=1),
            id="repeated-id",
        ),
    ],
)
def test_rejects_in_several_chunks_are_stored_once_with_their_lines(
    tenant, ndjson, load, small_chunks, last_path, first, line_11, path, expected
):
    """Rejects in chunks 1, 2, 3 (all bad) and 4 are stored exactly once with line, field and
    code, whether the chunks went the fast way, the careful way, or the file was merged
    whole because of a repeated id."""
    load(tenant, ndjson("customers_0.ndjson", [customer("c7")]))
    lines = [
        customer(first),
        BAD_EMAIL,
        customer("c2"),
        "{bad",
        "",
        customer("c3"),
        customer("c4"),
        "[]",
        MISSING_NAME,
        BAD_ID,
        line_11,
        customer("c5"),
        BAD_TIME,
    ]
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert last_path() == path
    assert (upload.state, counts_of(upload)) == (UploadState.COMPLETED_WITH_ERRORS, expected)
    assert rejects_of(upload) == REJECTS
    assert Reject.objects.filter(upload=upload).count() == len(REJECTS)
    names = customers_of(tenant)
    assert set(names) == {first, "c2", "c3", "c4", "c5", "c6", "c7"} - (
        {"c6"} if path == AFTER_REPEAT else set()
    )
    assert names["c2"] == ("last" if path == AFTER_REPEAT else "c2")


# --- pending rows from earlier uploads -------------------------------------------------------


@pytest.mark.parametrize(
    ("o_a_customer", "expected", "loaded", "held"),
    [
        pytest.param(
            "c1",
            counts(total=8, inserted=7, pending=1),
            {"oa": "c1"},
            {"ob": ("c9", "orders_1.ndjson", 2), "o6": ("c7", "orders_2.ndjson", 9)},
            id="superseding-row-loads",
        ),
        pytest.param(
            "c9",
            counts(total=8, inserted=6, pending=2),
            {},
            {
                "oa": ("c9", "orders_2.ndjson", 5),
                "ob": ("c9", "orders_1.ndjson", 2),
                "o6": ("c7", "orders_2.ndjson", 9),
            },
            id="superseding-row-held-again",
        ),
    ],
)
def test_a_tenant_holding_orders_merges_carefully_and_supersedes_the_held_row(
    tenant, ndjson, load, small_chunks, last_path, o_a_customer, expected, loaded, held
):
    """With orders already held, every chunk goes the careful way: an order id held by an
    earlier upload is replaced by the new file's row (the earlier upload counts it as a
    duplicate), the other held order stays, and new missing customers are held."""
    load(tenant, ndjson("customers_0.ndjson", [customer(f"c{i}") for i in range(3)]))
    earlier = load(tenant, ndjson("orders_1.ndjson", [order("oa", "c8"), order("ob", "c9")]))
    assert counts_of(earlier) == counts(total=2, pending=2)
    lines = (
        [order("o0", "c0"), order("o1", "c1"), order("o2", "c2")]
        + [order("o3", "c0"), order("oa", o_a_customer), order("o4", "c1")]
        + [order("o5", "c2"), "", order("o6", "c7")]
    )
    upload = load(tenant, ndjson("orders_2.ndjson", lines))
    assert last_path() == PIPELINED
    assert counts_of(upload) == expected
    assert counts_of(earlier) == counts(total=2, pending=1, duplicates=1)
    others = {"o0": "c0", "o1": "c1", "o2": "c2", "o3": "c0", "o4": "c1", "o5": "c2"}
    assert orders_of(tenant) == others | loaded
    assert held_orders_of(tenant) == held

    load(tenant, ndjson("customers_1.ndjson", [customer("c9")]))
    assert counts_of(earlier) == counts(total=2, inserted=1, duplicates=1)
    assert counts_of(upload) == counts(total=8, inserted=7, pending=1)
    assert orders_of(tenant) == others | {"oa": o_a_customer, "ob": "c9"}


# --- strict mode and unseekable streams ------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "lines", "reject"),
    [
        pytest.param(
            "customers_1.ndjson",
            [customer(f"c{i}") for i in range(9)] + [customer("c9", email="x")],
            (10, "email", "invalid_email"),
            id="customers",
        ),
        pytest.param(
            "orders_1.ndjson",
            [order("o0", "c5")] + [order(f"o{i}", "c0") for i in range(1, 9)] + ["", "{"],
            (11, "", "invalid_json"),
            id="orders-one-of-them-holdable",
        ),
    ],
)
def test_a_strict_upload_with_a_bad_row_in_its_last_chunk_loads_nothing(
    tenant, ndjson, load, small_chunks, last_path, filename, lines, reject
):
    """strict=true over four chunks with the only bad row in the last one: failed, nothing
    inserted or held, the one reject listed."""
    load(tenant, ndjson("customers_0.ndjson", [customer("c0")]))
    upload = load(tenant, ndjson(filename, lines), strict=True)
    assert last_path() == WHOLE_FILE
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "strict_rejected")
    assert counts_of(upload) == counts(total=10, rejected=1)
    assert rejects_of(upload) == [reject]
    assert customers_of(tenant) == {"c0": "c0"}
    assert Order.objects.filter(tenant=tenant).count() == 0
    assert PendingOrder.objects.filter(tenant=tenant).count() == 0


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_an_unseekable_stream_loads_through_the_whole_file_path(
    tenant, ndjson, load, small_chunks, last_path, compression
):
    """A stream that cannot seek is read once (a repeated id needs no second reading: the
    whole file is staged by then): a repeated id, a reject, an update and an unchanged row
    over four chunks all come out exact."""
    load(tenant, ndjson("customers_0.ndjson", [customer("c7"), customer("c8")]))
    lines = [
        customer("c0", "first"),
        customer("c1"),
        customer("c2"),
        customer("c7", "renamed"),
        "{",
        customer("c8"),
        customer("c3"),
        "",
        customer("c0", "last"),
        customer("c4"),
        customer("c5"),
    ]
    data = ndjson_bytes(lines, compression=compression)
    outcome = upload_register(
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        fingerprint=fingerprint(io.BytesIO(data)),
        strict=False,
    )
    upload = upload_process(upload_id=outcome.upload.id, stream=Unseekable(data))
    assert last_path() == AFTER_REPEAT
    assert (upload.state, upload.error_code) == (UploadState.COMPLETED_WITH_ERRORS, "")
    assert counts_of(upload) == counts(
        total=10, inserted=6, updated=1, unchanged=1, rejected=1, duplicates=1
    )
    assert rejects_of(upload) == [(5, "", "invalid_json")]
    assert customers_of(tenant) == {
        "c0": "last",
        "c1": "c1",
        "c2": "c2",
        "c3": "c3",
        "c4": "c4",
        "c5": "c5",
        "c7": "renamed",
        "c8": "c8",
    }


# --- chunk size does not change the outcome --------------------------------------------------

_WITH_EVERYTHING = [
    order("o0", "c0"),
    order("o1", "c1", order_status="shipped"),
    order("o2", "c2"),
    "",
    order("o3", "c5"),
    order("o4", "c0", currency="ZZZ"),
    order("o5", "c1"),
    order("o6", "c2"),
    raw_row(order("o7", "c0"), total_amount='"-1"'),
    order("o8", "c6"),
    order("o9", "c1"),
    "not json",
    order("o10", "c0"),
    "",
]
SCENARIOS = {
    "updates-pending-rejects": _WITH_EVERYTHING,
    "and-a-repeated-id": [*_WITH_EVERYTHING, order("o2", "c9", order_status="last")],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 4, 7])
def test_the_outcome_does_not_depend_on_the_chunk_size(
    transactional_db,
    tenant,
    other_tenant,
    ndjson,
    load,
    monkeypatch,
    last_path,
    scenario,
    chunk_rows,
):
    """The same file (new, changed, unchanged, held, rejected and blank lines, with or without
    a repeated id) loaded in chunks of a few rows and in one default chunk gives the same
    counts, rejects, stored and held rows. Each upload commits, as in production."""
    path = AFTER_REPEAT if "repeated" in scenario else PIPELINED
    snapshots = []
    for owner, size in ((tenant, None), (other_tenant, chunk_rows)):
        if size is not None:
            monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", size)
        load(owner, ndjson("customers_0.ndjson", [customer(f"c{i}") for i in range(3)]))
        load(owner, ndjson("orders_0.ndjson", [order("o1", "c1"), order("o2", "c2")]))
        upload = load(owner, ndjson("orders_1.ndjson", SCENARIOS[scenario]))
        assert last_path() == path
        assert_counts_add_up(upload)
        snapshots.append(snapshot(owner, upload))
    assert snapshots[0] == snapshots[1]
    assert snapshots[0]["rejects"] == [
        (6, "currency", "invalid_currency"),
        (9, "total_amount", "out_of_range"),
        (12, "", "invalid_json"),
    ]
    assert snapshots[0]["counts"] == (
        counts(total=13, inserted=5, updated=1, rejected=3, pending=3, duplicates=1)
        if "repeated" in scenario
        else counts(total=12, inserted=5, updated=1, unchanged=1, rejected=3, pending=2)
    )


# --- failures in either thread ---------------------------------------------------------------


def test_a_file_that_breaks_off_after_several_chunks_loads_nothing(
    tenant, ndjson, load, small_chunks, monkeypatch
):
    """A gzip file cut short fails while its first chunks are already merged: the upload
    fails with invalid_compression and none of its rows or rejects remain."""
    monkeypatch.setattr("apps.ingestions.engine.reader.CHUNK_BYTES", 256)
    load(tenant, ndjson("customers_0.ndjson", [customer("c30", "kept")]))
    lines = [customer(f"c{i}") for i in range(30)]
    lines[4] = "{"
    data = ndjson_bytes(lines, compression="gzip")
    path = ndjson("customers_1.ndjson.gz", [])
    path.write_bytes(data[:-12])
    upload = load(tenant, path)
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "invalid_compression")
    assert (upload.rows_inserted, upload.rows_rejected) == (0, 0)
    assert customers_of(tenant) == {"c30": "kept"}
    assert Reject.objects.filter(upload=upload).count() == 0


def _trigger_on_customers(body: str) -> None:
    """A row trigger on the final customers table (the test's transaction drops it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pg_temp.customer_trigger() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {body} RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER customer_trigger BEFORE INSERT OR UPDATE ON customers "
            "FOR EACH ROW EXECUTE FUNCTION pg_temp.customer_trigger()"
        )


@pytest.mark.parametrize("first", ["c0", "c9"], ids=["fast", "careful"])
def test_a_database_error_in_a_later_chunk_fails_the_upload_and_loads_nothing(
    tenant, ndjson, load, small_chunks, first
):
    """A statement failing in the merging thread on chunk 3 (fast or careful way) fails the
    upload without hanging; rows of chunks 1-2 and their rejects are rolled back."""
    load(tenant, ndjson("customers_0.ndjson", [customer("c9", "kept")]))
    _trigger_on_customers("IF NEW.name = 'boom' THEN RAISE EXCEPTION 'boom'; END IF;")
    lines = [customer(first), "{", customer("c2")] + [customer(f"c{i}") for i in range(3, 6)]
    lines += [customer("c6"), customer("c7", "boom"), customer("c8")] * 1
    lines += [customer(f"c1{i}") for i in range(6)]
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "internal_error")
    assert customers_of(tenant) == {"c9": "kept"}
    assert Reject.objects.filter(upload=upload).count() == 0


@pytest.mark.parametrize(
    "lines",
    [
        [customer(f"c{i}") for i in range(9)],
        [customer("c0"), customer("c1"), customer("c2"), customer("c0", "again")]
        + [customer(f"c{i}") for i in range(3, 9)],
    ],
    ids=["while-merging", "after-a-repeated-id"],
)
def test_a_staging_failure_in_a_later_chunk_fails_the_load_and_ends_its_threads(
    tenant, small_chunks, monkeypatch, lines
):
    """The staging thread's error on chunk 3 reaches the caller as it is, also after the
    merge thread met a repeated id (no whole-file merge of a partly staged file), and no
    thread of the load is left running."""
    from apps.ingestions.engine.stage import Staging

    written = []
    original = Staging.write

    def failing_write(self, chunk):
        if len(written) == 2:
            raise psycopg.OperationalError("the staging connection broke")
        written.append(chunk.first_line)
        original(self, chunk)

    monkeypatch.setattr(Staging, "write", failing_write)
    data = ndjson_bytes(lines)
    upload = _register(tenant, data)
    with (
        pytest.raises(psycopg.OperationalError, match="staging connection broke"),
        connection.connection.cursor() as cursor,
    ):
        load_registered(cursor, upload, io.BytesIO(data))
    assert written == [1, 4]
    alive = [t.name for t in threading.enumerate() if t.name.endswith(str(upload.id))]
    assert alive == []


# --- bugs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e1000000", "1e-20000"])
def test_a_huge_number_inside_metadata_is_one_reject(tenant, ndjson, load, small_chunks, number):
    """A number out of PostgreSQL's range inside an object is a reject for its row only."""
    lines = [customer(f"c{i}") for i in range(7)]
    lines.append(raw_row(customer("c7"), metadata=f'{{"x": {number}}}'))
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert upload.state == UploadState.COMPLETED_WITH_ERRORS
    assert [(line, field) for line, field, _ in rejects_of(upload)] == [(8, "metadata")]
    assert counts_of(upload) == counts(total=8, inserted=7, rejected=1)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-01-01T00:00:00+23:59", "2023-12-31T00:01:00+00:00"),
        ("2024-01-01T00:00:00+05:30:15.5", "2023-12-31T18:29:44.500000+00:00"),
    ],
)
def test_a_timestamp_with_an_offset_postgres_refuses_does_not_fail_the_upload(
    tenant, ndjson, load, small_chunks, text, instant
):
    """The row is stored at the right instant or rejected as invalid_timestamp; the upload
    and the other rows are not affected."""
    lines = [customer(f"c{i}") for i in range(4)] + [customer("c4", created_at=text)]
    upload = load(tenant, ndjson("customers_1.ndjson", lines))
    assert upload.state != UploadState.FAILED, upload.error_detail
    stored = Customer.objects.filter(tenant=tenant, customer_id=uid("c4")).first()
    if stored is None:
        assert rejects_of(upload) == [(5, "created_at", "invalid_timestamp")]
    else:
        assert stored.created_at.isoformat() == instant
    assert Customer.objects.filter(tenant=tenant).count() >= 4


def _register(tenant, data: bytes, record_type: str = "customers", *, strict: bool = False):
    return upload_register(
        tenant=tenant,
        record_type=record_type,
        filename=f"{record_type}_1.ndjson",
        fingerprint=fingerprint(io.BytesIO(data)),
        strict=strict,
    ).upload


def load_registered(cursor, upload, stream, **options):
    """`load_upload` of a registered upload's bytes (a stream), in the caller's cursor."""
    return load_upload(
        cursor,
        tenant_id=str(upload.tenant_id),
        upload_id=str(upload.id),
        record_type=upload.record_type,
        stream=stream,
        strict=upload.strict,
        now=timezone.now(),
        **options,
    )


def test_a_file_merged_whole_starts_where_the_stream_started(tenant, small_chunks, last_path):
    """The engine reads a stream from its current position, also when a repeated id sends
    it down the whole-file path: bytes before that position (a header another layer
    consumed) are never parsed."""
    lines = [customer(f"c{i}") for i in range(5)] + [customer("c1", "last")]
    data = ndjson_bytes(lines)
    header = b"# exported by shop v2\n"
    stream = io.BytesIO(header + data)
    stream.read(len(header))
    upload = _register(tenant, data)
    with transaction.atomic(), connection.connection.cursor() as cursor:
        result = load_registered(cursor, upload, stream)
    assert last_path() == AFTER_REPEAT
    assert rejects_of(upload) == []
    assert (result.rows.total, result.rows.inserted, result.rows.duplicates) == (6, 5, 1)


class _Interrupted(Exception):
    """Stands for Celery's SoftTimeLimitExceeded or a KeyboardInterrupt: raised by a signal
    handler in the main thread, wherever it happens to be."""


def _backend_state(pid: int) -> str:
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
            return cursor.fetchone()[0]
    finally:
        other.close()


@pytest.mark.parametrize(
    "first",
    [
        [customer("c0"), customer("c1"), customer("c2")],
        [customer("c0"), customer("c0", "again"), customer("c2")],
    ],
    ids=["merge-thread", "whole-file"],
)
@pytest.mark.parametrize("more", [0, 12], ids=["short", "queued-chunks"])
def test_no_statement_of_a_load_still_runs_after_it_was_interrupted(
    tenant, small_chunks, first, more
):
    """When load_upload is interrupted, no statement of it still runs on the connection by
    the time the exception reaches the caller: neither the merging thread's, nor one of
    the calling thread (the whole-file merge after a repeated id, in the second case)."""
    _trigger_on_customers("IF NEW.name = 'slow' THEN PERFORM pg_sleep(3); END IF;")
    # with `more` rows the file is parsed long before the slow merge is done: the signal
    # comes while the calling thread waits to hand over the last chunks or the end
    extra = [customer(f"c{5 + i}") for i in range(more)]
    data = ndjson_bytes([*first, customer("c3", "slow"), customer("c4"), *extra])
    upload = _register(tenant, data)
    pid = connection.connection.info.backend_pid

    def interrupt(signum, frame):
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(_Interrupted), connection.connection.cursor() as cursor:
            load_registered(cursor, upload, io.BytesIO(data))
        state = _backend_state(pid)
        threads = [t.name for t in threading.enumerate() if t.name.endswith(str(upload.id))]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        deadline = time.monotonic() + 10
        while _backend_state(pid) == "active" and time.monotonic() < deadline:
            time.sleep(0.1)
    assert state != "active"
    assert threads == []


def test_ids_of_an_earlier_load_in_the_same_transaction_are_not_repeated_ids(
    tenant, ndjson, load, small_chunks, last_path
):
    """Two loads in one transaction: ids the first tracked do not send the second, which
    repeats none of its own, down the whole-file path."""
    load(tenant, ndjson("customers_0.ndjson", [customer("c9")]))
    load(tenant, ndjson("customers_1.ndjson", [customer("c0"), customer("c9", "new")]))
    assert last_path() == PIPELINED
    lines = [customer("d0"), customer("d1"), customer("d2")]
    lines += [customer("d3"), customer("c0", "renamed"), customer("d4")]
    upload = load(tenant, ndjson("customers_2.ndjson", lines))
    assert counts_of(upload) == counts(total=6, inserted=5, updated=1)
    assert last_path() == PIPELINED
