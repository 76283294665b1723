"""The analytics copies (`apps.analytics.models`) kept from the final tables' change feed:
what merges note, what catching up makes of it (compared with the same rows worked out
here from the final tables), the worker that catches up after a merge, and readers at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.analytics.services import analytics_catch_up, analytics_refresh
from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import FinalChange, FinalChangeWake, Upload
from apps.tenants.services import api_key_rotate
from tests.conftest import wait_for

_FACTS = (
    "SELECT order_id, order_date, customer_id, currency, total, items, units, prev_order_date, "
    "prev_in_currency FROM analytics_orders WHERE tenant_id = %s ORDER BY order_id"
)
# The same, from the final tables: each order's items counted, and the order before it of
# its customer (and of its customer in its currency), ties going to the lower order id.
_TRUTH = """
SELECT o.order_id, o.order_date, o.customer_id, o.currency, o.total_amount,
  (SELECT count(*) FROM order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.order_id),
  (SELECT coalesce(sum(i.quantity), 0) FROM order_items i
   WHERE i.tenant_id = o.tenant_id AND i.order_id = o.order_id),
  (SELECT max(p.order_date) FROM orders p WHERE p.tenant_id = o.tenant_id
   AND p.customer_id = o.customer_id AND (p.order_date, p.order_id) < (o.order_date, o.order_id)),
  (SELECT max(p.order_date) FROM orders p WHERE p.tenant_id = o.tenant_id
   AND p.customer_id = o.customer_id AND p.currency = o.currency
   AND (p.order_date, p.order_id) < (o.order_date, o.order_id))
FROM orders o WHERE o.tenant_id = %s ORDER BY o.order_id
"""
_LINES = (
    "SELECT order_item_id, order_id, product_id, order_date, currency, quantity, line_total "
    "FROM analytics_lines WHERE tenant_id = %s ORDER BY order_item_id"
)
_LINES_TRUTH = (
    "SELECT i.order_item_id, i.order_id, i.product_id, o.order_date, o.currency, i.quantity, "
    "i.line_total FROM order_items i JOIN orders o ON o.tenant_id = i.tenant_id "
    "AND o.order_id = i.order_id WHERE i.tenant_id = %s ORDER BY i.order_item_id"
)


# The totals, from the final tables; the copies' groups every row has left (0) left out.
_MONTHS = (
    "SELECT month, currency, product_id, lines, units, revenue FROM analytics_product_ytd "
    "WHERE tenant_id = %s AND lines <> 0 ORDER BY 1, 2, 3"
)
# each month that has a group's items, and every later month of its year, to date
_MONTHS_TRUTH = (
    "WITH m AS (SELECT date_trunc('month', o.order_date AT TIME ZONE 'UTC') AS month, "
    "o.currency, i.product_id, i.quantity, i.line_total FROM order_items i "
    "JOIN orders o ON o.tenant_id = i.tenant_id AND o.order_id = i.order_id "
    "WHERE i.tenant_id = %s), "
    "k AS (SELECT DISTINCT g.month, m.currency, m.product_id FROM m, generate_series("
    "m.month, date_trunc('year', m.month) + interval '11 months', interval '1 month') g(month)) "
    "SELECT k.month AT TIME ZONE 'UTC', k.currency, k.product_id, count(*), sum(m.quantity), "
    "sum(m.line_total) FROM k JOIN m ON m.currency = k.currency AND m.product_id = k.product_id "
    "AND m.month <= k.month AND date_trunc('year', m.month) = date_trunc('year', k.month) "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)
_PRODUCTS = (
    "SELECT currency, product_id, lines, units, revenue FROM analytics_product_totals "
    "WHERE tenant_id = %s AND lines <> 0 ORDER BY 1, 2"
)
_PRODUCTS_TRUTH = (
    "SELECT o.currency, i.product_id, count(*), sum(i.quantity), sum(i.line_total) "
    "FROM order_items i JOIN orders o ON o.tenant_id = i.tenant_id AND o.order_id = i.order_id "
    "WHERE i.tenant_id = %s GROUP BY 1, 2 ORDER BY 1, 2"
)
_CUSTOMERS = (
    "SELECT customer_id, currency, orders, revenue FROM analytics_customer_totals "
    "WHERE tenant_id = %s AND orders <> 0 ORDER BY 1, 2"
)
_CUSTOMERS_TRUTH = (
    "SELECT customer_id, currency, count(*), sum(total_amount) FROM orders "
    "WHERE tenant_id = %s GROUP BY 1, 2 ORDER BY 1, 2"
)


def _all(query: str, tenant) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, [tenant.id])
        return cursor.fetchall()


def _assert_copies_true(tenant) -> None:
    assert _all(_FACTS, tenant) == _all(_TRUTH, tenant)
    assert _all(_LINES, tenant) == _all(_LINES_TRUTH, tenant)
    assert _all(_MONTHS, tenant) == _all(_MONTHS_TRUTH, tenant)
    assert _all(_PRODUCTS, tenant) == _all(_PRODUCTS_TRUTH, tenant)
    assert _all(_CUSTOMERS, tenant) == _all(_CUSTOMERS_TRUTH, tenant)


def _item(n: str, order: str, product: str = "pen", quantity: int = 1) -> dict:
    return order_item_row(
        order_item_id=uid(n),
        order_id=uid(order),
        product_id=uid(product),
        quantity=quantity,
        unit_price="2.00",
        line_total=f"{2 * quantity}.00",
    )


def _order(n: str, customer: str, when: str, currency: str = "EUR", total: str = "9.00") -> dict:
    return order_row(
        order_id=uid(n),
        customer_id=uid(customer),
        order_date=when,
        currency=currency,
        total_amount=total,
    )


@pytest.mark.django_db
def test_the_copies_match_the_final_tables_after_every_kind_of_change(tenant, load, ndjson):
    """Items before their orders, then the orders, then an order moved to another day,
    currency and customer, an item moved to another order, a re-sent file: after each,
    catching up leaves copies equal to the final tables' rows."""
    people = [customer_row(customer_id=uid(c)) for c in ("ada", "bob")]
    load(tenant, ndjson("customers_1.ndjson", people))
    load(tenant, ndjson("products_1.ndjson", [product_row(product_id=uid("pen"))]))
    items = [_item("i1", "o1"), _item("i2", "o1", quantity=3), _item("i3", "o2")]
    assert load(tenant, ndjson("order_items_1.ndjson", items)).rows_pending == 3
    analytics_catch_up(tenant_id=tenant.id)
    assert _all(_FACTS, tenant) == []  # held rows are not loaded: nothing to count
    orders = [
        _order("o1", "ada", "2024-03-01T10:00:00Z"),
        _order("o2", "ada", "2024-03-02T10:00:00Z"),
        _order("o3", "ada", "2024-03-02T10:00:00Z", currency="USD"),  # a tie with o2
        _order("o4", "bob", "2024-03-03T10:00:00Z"),
    ]
    assert load(tenant, ndjson("orders_1.ndjson", orders)).rows_inserted == 4
    assert analytics_catch_up(tenant_id=tenant.id) > 0
    _assert_copies_true(tenant)
    counted = {str(row[0]): row[5:7] for row in _all(_FACTS, tenant)}
    assert [counted[uid(n)] for n in ("o1", "o2", "o3")] == [(2, 4), (1, 1), (0, 0)]

    # o1 moves to April, after o2, to USD, to Bob: its items follow it (to another month of
    # their products); both customers' chains change
    moved = [_order("o1", "bob", "2024-04-05T10:00:00Z", currency="USD", total="30.00")]
    assert load(tenant, ndjson("orders_2.ndjson", moved)).rows_updated == 1
    analytics_catch_up(tenant_id=tenant.id)
    _assert_copies_true(tenant)
    # an item changes order and quantity
    changed = [_item("i3", "o4", quantity=5)]
    assert load(tenant, ndjson("order_items_2.ndjson", changed)).rows_updated == 1
    analytics_catch_up(tenant_id=tenant.id)
    _assert_copies_true(tenant)
    # an order changes currency only while one of its items changes, in one catching up
    load(tenant, ndjson("orders_4.ndjson", [_order("o2", "ada", "2024-03-02T10:00:00Z", "GBP")]))
    load(tenant, ndjson("order_items_3.ndjson", [_item("i3", "o2", quantity=2)]))
    analytics_catch_up(tenant_id=tenant.id)
    _assert_copies_true(tenant)
    # rows sent again as they are change nothing, and noting them again changes nothing
    again = [*moved, orders[3]]
    assert load(tenant, ndjson("orders_3.ndjson", again)).rows_unchanged == 2
    analytics_catch_up(tenant_id=tenant.id)
    _assert_copies_true(tenant)
    assert not FinalChange.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_merges_note_the_orders_and_items_they_write_and_nothing_else(tenant, load, ndjson):
    """Customers and products are not noted, a dry run leaves no note, and a load of
    orders notes exactly its ids."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("ada"))]))
    load(tenant, ndjson("products_1.ndjson", [product_row(product_id=uid("pen"))]))
    orders = [_order(f"o{n}", "ada", "2024-03-01T10:00:00Z") for n in range(3)]
    load(tenant, ndjson("orders_1.ndjson", orders), dry_run=True)
    assert not FinalChange.objects.filter(tenant=tenant).exists()
    load(tenant, ndjson("orders_2.ndjson", orders))
    noted = list(FinalChange.objects.filter(tenant=tenant).values_list("record_type", "keys"))
    assert [(kind, sorted(map(str, keys))) for kind, keys in noted] == [
        ("orders", sorted(uid(f"o{n}") for n in range(3)))
    ]


@pytest.mark.django_db(transaction=True)
def test_a_worker_catches_up_after_an_upload(celery_worker, tenant, client_for):
    """An upload of orders sends the refresh: the worker applies the notes, deletes them
    and the tenant's wake row, and the copies match the final tables."""
    client = client_for(tenant)
    orders = [_order(f"o{n}", "ada", f"2024-03-0{n + 1}T10:00:00Z") for n in range(4)]
    for name, rows in (
        ("customers_1.ndjson", [customer_row(customer_id=uid("ada"))]),
        ("orders_1.ndjson", orders),
    ):
        response = client.post(
            f"/api/v1/ingest/comprehensive/?filename={name}",
            data=ndjson_bytes(rows),
            content_type="application/x-ndjson",
        )
        assert response.status_code == 202, response.content
    wait_for(lambda: len(_all(_FACTS, tenant)) == 4, timeout=60)
    wait_for(lambda: not FinalChangeWake.objects.filter(tenant=tenant).exists(), timeout=30)
    assert not FinalChange.objects.filter(tenant=tenant).exists()
    _assert_copies_true(tenant)


@pytest.mark.django_db(transaction=True)
def test_readers_at_once_catch_up_once_and_agree(tenant, load, ndjson):
    """Six readers at once with changes to apply: one catches up, the others wait for it
    and find nothing left; all answer the same, and the copies are exact."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("ada"))]))
    orders = [_order(f"o{n}", "ada", f"2024-03-0{n % 9 + 1}T10:00:00Z") for n in range(40)]
    load(tenant, ndjson("orders_1.ndjson", orders))
    key = api_key_rotate(tenant=tenant, revoke_existing=False).raw
    answers, start = [], threading.Barrier(6)

    def read() -> None:
        try:
            start.wait()
            response = Client(HTTP_X_API_KEY=key).get("/api/v1/analytics/summary/")
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {"orders": 40, "customers": 1, "revenue": {"EUR": "360.00"}}
    assert len(answers) == 6
    for status, body in answers:
        assert status == 200
        assert {k: body[k] for k in expected} == expected
    assert not FinalChange.objects.filter(tenant=tenant).exists()
    _assert_copies_true(tenant)


@pytest.mark.django_db
def test_the_refresh_waits_for_the_tenant_s_files_still_to_load(tenant, load, ndjson):
    """With a file of the tenant queued, the refresh leaves the changes for later (a
    minute at most from the oldest); once nothing is left to load, it applies them."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("ada"))]))
    upload = load(tenant, ndjson("orders_1.ndjson", [_order("o1", "ada", "2024-03-01T10:00Z")]))
    Upload.objects.filter(id=upload.id).update(state="queued")  # as if another file waited
    assert analytics_refresh(tenant_id=tenant.id) == 0
    assert FinalChange.objects.filter(tenant=tenant).exists()
    FinalChange.objects.filter(tenant=tenant).update(
        created_at=timezone.now() - timedelta(minutes=2)
    )
    assert analytics_refresh(tenant_id=tenant.id) == 1  # waited long enough
    _assert_copies_true(tenant)
    load(tenant, ndjson("orders_2.ndjson", [_order("o2", "ada", "2024-03-02T10:00Z")]))
    assert analytics_refresh(tenant_id=tenant.id) == 0
    Upload.objects.filter(id=upload.id).update(state="completed")
    assert analytics_refresh(tenant_id=tenant.id) == 1
    _assert_copies_true(tenant)


@pytest.mark.django_db
def test_the_refresh_leaves_the_workers_to_another_tenant_s_files(
    tenant, other_tenant, load, ndjson
):
    """Another tenant's file still to load puts the refresh off as the tenant's own does
    (a minute at most); a live part still to merge does not."""
    load(tenant, ndjson("customers_1.ndjson", [customer_row(customer_id=uid("ada"))]))
    load(tenant, ndjson("orders_1.ndjson", [_order("o1", "ada", "2024-03-01T10:00Z")]))
    other = load(other_tenant, ndjson("customers_1.ndjson", [customer_row()]))
    Upload.objects.filter(id=other.id).update(state="processing")
    assert analytics_refresh(tenant_id=tenant.id) == 0
    assert FinalChange.objects.filter(tenant=tenant).exists()
    Upload.objects.filter(id=other.id).update(state="queued", source="live")
    assert analytics_refresh(tenant_id=tenant.id) == 1
    _assert_copies_true(tenant)
    with connection.cursor() as cursor:  # the question is answered from the partial index
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT 1 FROM uploads WHERE source = 'file' AND state = ANY (%s)",
            [["queued", "waiting", "processing"]],
        )
        assert "uploads_loading" in "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.django_db
def test_a_refresh_applies_the_feed_a_few_entries_at_a_time(tenant, load, ndjson, monkeypatch):
    """A refresh task applies `REFRESH_ENTRIES` of the feed and sends itself again for the
    rest, so that a tenant's backlog never holds a worker slot for long. Applied one entry
    at a time, in the order written, with orders moved to other days and customers after
    their items were loaded, the copies come out equal to the final tables."""
    from apps.analytics import services

    sent = []
    send = services.changes_reader_send
    monkeypatch.setattr(
        services, "changes_reader_send", lambda **kwargs: sent.append(kwargs) or send(**kwargs)
    )
    monkeypatch.setattr(services, "REFRESH_ENTRIES", 1)
    people = [customer_row(customer_id=uid(c)) for c in ("ada", "bob")]
    load(tenant, ndjson("customers_1.ndjson", people))
    load(tenant, ndjson("products_1.ndjson", [product_row(product_id=uid("pen"))]))
    orders = [
        _order("o1", "ada", "2024-03-01T10:00:00Z"),
        _order("o2", "ada", "2024-03-02T10:00:00Z"),
        _order("o3", "bob", "2024-12-31T23:00:00Z", currency="USD"),
    ]
    load(tenant, ndjson("orders_1.ndjson", orders))
    items = [_item("i1", "o1"), _item("i2", "o1", quantity=3), _item("i3", "o2")]
    load(tenant, ndjson("order_items_1.ndjson", items))
    moved = [
        _order("o1", "bob", "2024-04-05T10:00:00Z", currency="USD", total="30.00"),
        _order("o3", "ada", "2025-01-01T01:00:00Z"),
    ]
    load(tenant, ndjson("orders_2.ndjson", moved))
    load(tenant, ndjson("order_items_2.ndjson", [_item("i3", "o3", quantity=5)]))
    entries = FinalChange.objects.filter(tenant=tenant).count()
    assert entries >= 3

    for done in range(1, entries + 1):
        assert analytics_refresh(tenant_id=tenant.id) > 0
        assert FinalChange.objects.filter(tenant=tenant).count() == entries - done
    assert len(sent) == entries - 1  # sent again after each entry but the last
    assert not FinalChangeWake.objects.filter(tenant=tenant).exists()  # merges send it next
    _assert_copies_true(tenant)
