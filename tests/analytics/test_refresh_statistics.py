"""After catching up, the copies are analyzed when the planner takes the tenant for
(nearly) empty in them: a tenant new to copies that are large already (under a tenth of
them changed, so nothing else analyzes them) had each later slice read all of its copies
and compare each with every id of the slice."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.analytics.services import _analyze_stale
from apps.ingestions.engine import tenant_rows_estimate

pytestmark = pytest.mark.django_db


def _lines(cursor, tenant, count: int) -> None:
    cursor.execute(
        "INSERT INTO analytics_lines (tenant_id, order_item_id, order_id, product_id, "
        "order_date, currency, quantity, line_total) SELECT %s, gen_random_uuid(), "
        "gen_random_uuid(), gen_random_uuid(), now(), 'EUR', 1, 1 FROM generate_series(1, %s)",
        [tenant.id, count],
    )


def test_copies_the_planner_takes_for_empty_are_analyzed(tenant, other_tenant):
    with connection.cursor() as cursor:
        _lines(cursor, other_tenant, 30_000)
        cursor.execute("ANALYZE analytics_lines")  # this transaction's, rolled back with it
        _lines(cursor, tenant, 2_000)  # under a tenth: not stale by the table's count
        assert tenant_rows_estimate(cursor.cursor, "analytics_lines", tenant.id) < 10
        _analyze_stale(tenant.id, 2_000)
        assert tenant_rows_estimate(cursor.cursor, "analytics_lines", tenant.id) > 1_000


def test_copies_the_planner_knows_are_left_alone(tenant, other_tenant):
    with connection.cursor() as cursor:
        _lines(cursor, other_tenant, 30_000)
        _lines(cursor, tenant, 2_000)
        cursor.execute("ANALYZE analytics_lines")
        _lines(cursor, tenant, 2_000)  # not in the statistics: about 2,000 believed
        _analyze_stale(tenant.id, 2_000)
        assert tenant_rows_estimate(cursor.cursor, "analytics_lines", tenant.id) < 3_000
