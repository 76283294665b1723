"""The live merge finds its batches' parts through `batch_id`'s index however many parts
the tenant ever sent, statistics or none: a server with autovacuum off never analyzes
`uploads`, and with no statistics PostgreSQL reads the whole table for a list of ids."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload
from apps.ingestions.services import record_merge

pytestmark = pytest.mark.django_db

_MANY = 20_000  # parts of earlier batches
_PICKED = 90  # batches in one merge (a busy tenant's, 0.3 s of batches of 100)


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_the_parts_of_a_merge_are_read_by_index_without_statistics(client, tenant):
    response = client.generic(
        "POST",
        "/api/v1/ingest/records/customers/",
        ndjson_bytes([customer_row(customer_id=uid("a"))]),
        content_type="application/x-ndjson",
    )
    assert response.status_code == 202, response.content
    part = Upload.objects.get(batch_id=response.json()["id"])
    with connection.cursor() as cursor:
        # Copies of the part in no batch, and no statistics at all on the table (as on a
        # server with autovacuum off; this transaction's own, rolled back with it).
        cursor.execute(
            "INSERT INTO uploads SELECT (jsonb_populate_record(u, jsonb_build_object("
            "'id', gen_random_uuid(), 'batch_id', NULL))).* "
            "FROM uploads u, generate_series(1, %s) g WHERE u.id = %s",
            [_MANY, part.id],
        )
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'uploads'::regclass")
        cursor.execute("SELECT count(*) FROM pg_statistic WHERE starelid = 'uploads'::regclass")
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "EXPLAIN (FORMAT JSON) " + record_merge._PARTS,
            [[part.batch_id, *range(-1, -_PICKED, -1)]],
        )
        plan = cursor.fetchone()[0]
        plan = plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan)[0]["Plan"]
    scans = {
        node["Node Type"] for node in _plan_nodes(plan) if node.get("Relation Name") == "uploads"
    }
    assert scans
    assert "Seq Scan" not in scans, scans
    found = list(Upload.objects.raw(record_merge._PARTS, [[part.batch_id]]))
    assert [p.id for p in found] == [part.id]
