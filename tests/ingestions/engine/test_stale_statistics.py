"""Tenants new to the statistics. The engine's parent check (engine/keys.py) probes each
parent by its whole key whatever the statistics say, and a load that leaves the planner
believing the tenant has fewer rows than it just got has the table analyzed.

A tenant new to them (its rows added since the table was last analyzed, too few to get it
analyzed again) looks like no rows to the planner; a check that let the planner choose
then read all of the tenant's parents for every chunk and compared each with every id of
the chunk: the first orders of a new tenant loaded 13 times slower in a database holding
other tenants."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from psycopg import sql

from apps.ingestions.engine import RECORDS, refresh_statistics, tenant_rows_estimate
from apps.ingestions.engine.keys import ARRAY_ROWS, ParentLocks

pytestmark = pytest.mark.django_db

_OTHERS = 3_000  # the other tenant's customers, in the statistics
_NEW = 2_000  # the tenant's, added since
_SOURCE = sql.SQL("pg_temp.chunk")


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _customers(cursor, tenant, count: int) -> None:
    cursor.execute(
        "INSERT INTO customers (tenant_id, customer_id, name, email, metadata, created_at) "
        "SELECT %s, gen_random_uuid(), 'n', 'e@example.com', '{}', now() "
        "FROM generate_series(1, %s)",
        [tenant.id, count],
    )


@pytest.fixture
def stale(tenant, other_tenant):
    """The other tenant's customers analyzed, then the tenant's added: the statistics
    know one tenant only. A chunk of orders naming all of the tenant's customers."""
    with connection.cursor() as cursor:
        _customers(cursor, other_tenant, _OTHERS)
        cursor.execute("ANALYZE customers")  # this transaction's, rolled back with it
        _customers(cursor, tenant, _NEW)
        cursor.execute(
            "CREATE TEMP TABLE chunk ON COMMIT DROP AS SELECT customer_id FROM customers "
            "WHERE tenant_id = %s",
            [tenant.id],
        )
        cursor.execute("ANALYZE pg_temp.chunk")
        cursor.execute(
            "EXPLAIN (FORMAT JSON) SELECT * FROM customers WHERE tenant_id = %s", [tenant.id]
        )
        assert _plan(cursor.fetchone()[0])["Plan Rows"] < 10  # the planner's belief
    return tenant


def _plan(found) -> dict:
    return (found if isinstance(found, list) else json.loads(found))[0]["Plan"]


def _locks() -> ParentLocks:
    with connection.cursor() as cursor:
        locks = ParentLocks.prepare(cursor.cursor, RECORDS["orders"])
    assert locks is not None
    return locks


@pytest.mark.parametrize("rows", [_NEW, ARRAY_ROWS + 1], ids=["array", "whole-file"])
def test_each_parent_is_probed_by_its_whole_key_on_stale_statistics(stale, rows):
    statement = _locks().statement(_SOURCE, rows=rows)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement).as_string(cursor.cursor),
            {"tenant": stale.id},
        )
        plan = _plan(cursor.fetchone()[0])
    scans = [node for node in _nodes(plan) if node.get("Relation Name") == "customers"]
    assert scans
    for scan in scans:
        assert "customer_id" in scan.get("Index Cond", ""), scan
        assert "Filter" not in scan, scan
    assert not [node for node in _nodes(plan) if "customer_id" in node.get("Join Filter", "")]


@pytest.mark.parametrize("rows", [_NEW, ARRAY_ROWS + 1], ids=["array", "whole-file"])
def test_the_check_is_true_only_when_every_parent_is_there(stale, rows):
    locks = _locks()
    with connection.cursor() as cursor:
        assert locks.lock(cursor.cursor, _SOURCE, {"tenant": stale.id}, rows=rows) is True
        cursor.execute("INSERT INTO pg_temp.chunk VALUES (gen_random_uuid())")
        assert locks.lock(cursor.cursor, _SOURCE, {"tenant": stale.id}, rows=rows) is False


def test_a_load_that_leaves_the_tenant_looking_empty_has_the_table_analyzed(tenant, other_tenant):
    with connection.cursor() as cursor:
        _customers(cursor, other_tenant, 30_000)
        cursor.execute("ANALYZE customers")
        _customers(cursor, tenant, 1_000)  # under a tenth of the table
        assert tenant_rows_estimate(cursor.cursor, "customers", tenant.id) < 10
        # the table's growth alone does not call for it
        assert not refresh_statistics(cursor.cursor, record_type="customers", inserted=1_000)
        grown = {"record_type": "customers", "inserted": 1_000, "tenant_id": tenant.id}
        assert refresh_statistics(cursor.cursor, **grown)
        assert tenant_rows_estimate(cursor.cursor, "customers", tenant.id) > 500
        # the planner knows the tenant now: the next such load leaves the table alone
        assert not refresh_statistics(cursor.cursor, **grown)
        # and so does one larger than the estimate: a tenant sending live records grows
        # by merges of about its estimated size, and each would analyze the whole table
        _customers(cursor, tenant, 2_000)
        known = tenant_rows_estimate(cursor.cursor, "customers", tenant.id)
        assert known < 2_000
        assert not refresh_statistics(cursor.cursor, **{**grown, "inserted": 2_000})


def _stats(cursor, column: str):
    cursor.execute(
        "SELECT null_frac, n_distinct, most_common_vals::text, most_common_freqs::text "
        "FROM pg_stats WHERE schemaname = 'public' AND tablename = 'customers' "
        "AND attname = %s",
        [column],
    )
    return cursor.fetchone()


def test_the_refresh_analyzes_the_columns_rows_are_looked_up_by(tenant, other_tenant):
    with connection.cursor() as cursor:
        _customers(cursor, other_tenant, 3_000)
        cursor.execute("ANALYZE customers")
        cursor.execute(  # 2,000 more, each with an email of its own
            "INSERT INTO customers (tenant_id, customer_id, name, email, metadata, created_at) "
            "SELECT %s, gen_random_uuid(), 'n', i || '@example.com', '{}', now() "
            "FROM generate_series(1, 2000) i",
            [tenant.id],
        )
        email, tenants = _stats(cursor, "email"), _stats(cursor, "tenant_id")
        grown = {"record_type": "customers", "inserted": 2_000, "tenant_id": tenant.id}
        assert refresh_statistics(cursor.cursor, **grown)
        assert _stats(cursor, "tenant_id") != tenants  # the tenant's share is known now
        assert str(tenant.id) in _stats(cursor, "tenant_id")[2]
        assert tenant_rows_estimate(cursor.cursor, "customers", tenant.id) > 1_000
        assert _stats(cursor, "email") == email  # left to autovacuum
