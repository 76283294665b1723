"""`load_parts` loads many parts as one and must give each part exactly what loading the
parts one after another with `load_upload` gives: the same counts, the same final rows,
the same held rows (under the same part and line), the same rejects, the same older held
rows replaced. Checked on generated sequences of parts that repeat ids within and across
parts, change values (updates, unchanged rows), miss parents (holds), carry bad lines and
blank lines, for two tenants that start from the same state: one loads in turn, the other
in one call.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from apps.ingestions import engine
from apps.ingestions.engine.testing import customer_row, order_item_row, order_row, product_row
from apps.ingestions.models import Reject, Upload
from apps.tenants.services import tenant_create

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 1, 1, tzinfo=UTC)
_POOL = [str(uuid.UUID(int=n + 1)) for n in range(12)]


def _line(rng: random.Random, record_type: str) -> bytes:
    roll = rng.random()
    if roll < 0.08:
        return b""  # a blank line (a reject of the batch left its place empty)
    if roll < 0.14:
        return b'{"broken": '
    if record_type == "customers":
        row = customer_row(customer_id=rng.choice(_POOL[:8]), name=rng.choice(["A", "B"]))
    elif record_type == "orders":
        row = order_row(
            order_id=rng.choice(_POOL[:8]),
            customer_id=rng.choice(_POOL[:6]),  # 4 and 5 are never loaded: held
            total_amount=rng.choice(["1.00", "2.00"]),
        )
    else:
        row = order_item_row(
            order_item_id=rng.choice(_POOL[:8]),
            order_id=rng.choice(_POOL[:8]),
            product_id=_POOL[0],
            quantity=1,
            unit_price="1.00",
            line_total="1.00",
        )
    if rng.random() < 0.05:
        row = {**row, "created_at": "not a time"} if "created_at" in row else {"x": 1}
    return json.dumps(row).encode()


def _parts(rng: random.Random, record_type: str) -> list[bytes]:
    return [
        b"\n".join(_line(rng, record_type) for _ in range(rng.randint(1, 6))) + b"\n"
        for _ in range(rng.randint(1, 8))
    ]


def _start(name: str) -> str:
    """A tenant with customers 0-3, product 0 and orders 0-2 (customer 0), and two held
    orders (their customer 4 missing) and a held item (its order 9 missing)."""
    tenant, _ = tenant_create(name=name)
    tid = str(tenant.id)
    seed = {
        "customers": [customer_row(customer_id=_POOL[n]) for n in range(4)],
        "products": [product_row(product_id=_POOL[0])],
        "orders": [order_row(order_id=_POOL[n], customer_id=_POOL[0]) for n in range(3)]
        + [order_row(order_id=_POOL[n], customer_id=_POOL[4]) for n in (6, 7)],
        "order_items": [order_item_row(order_item_id=_POOL[11], order_id=_POOL[9])],
    }
    for record_type in engine.RECORD_ORDER:
        rows = seed[record_type]
        data = b"\n".join(json.dumps(r).encode() for r in rows) + b"\n"
        _load_one(tid, record_type, _upload(tid, record_type), data)
    return tid


def _upload(tenant_id: str, record_type: str) -> str:
    upload = Upload.objects.create(
        tenant_id=tenant_id,
        record_type=record_type,
        filename="p.ndjson",
        source="live",
        sha256=uuid.uuid4().hex,
    )
    return str(upload.id)


def _load_one(tenant_id: str, record_type: str, upload_id: str, data: bytes):
    with connection.connection.cursor() as cursor:
        return engine.load_upload(
            cursor,
            tenant_id=tenant_id,
            upload_id=upload_id,
            record_type=record_type,
            stream=io.BytesIO(data),
            now=NOW,
        )


def _state(tenant_id: str, record_type: str, uploads: list[str]) -> dict:
    """The tenant's final rows of every type, its held rows and rejects (uploads named by
    part number)."""
    number = {u: n for n, u in enumerate(uploads)}
    out = {}
    with connection.cursor() as cursor:
        for spec in engine.RECORDS.values():
            cols = ", ".join(spec.columns)
            cursor.execute(
                f"SELECT {cols} FROM {spec.table} WHERE tenant_id = %s ORDER BY 1", [tenant_id]
            )
            out[spec.table] = cursor.fetchall()
            if spec.holds_pending:
                cursor.execute(
                    f"SELECT {cols}, upload_id::text, line FROM {spec.pending_table} "
                    "WHERE tenant_id = %s ORDER BY 1",
                    [tenant_id],
                )
                out[spec.pending_table] = [
                    (*row[:-2], number.get(row[-2], "older"), row[-1]) for row in cursor.fetchall()
                ]
    rejects = Reject.objects.filter(upload_id__in=uploads).values_list(
        "upload_id", "line", "field", "code"
    )
    out["rejects"] = sorted((number[str(u)], *rest) for u, *rest in rejects)
    return out


def _supersede_map(results, uploads: list[str]) -> dict:
    number = {u: n for n, u in enumerate(uploads)}
    total: dict = {}
    for result in results:
        for upload, n in result.superseded:
            key = number.get(upload, "older")
            total[key] = total.get(key, 0) + n
    return total


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("record_type", ["customers", "orders", "order_items"])
def test_parts_loaded_as_one_give_each_part_what_it_gets_loaded_alone(seed, record_type):
    rng = random.Random(f"{record_type}-{seed}")
    parts = _parts(rng, record_type)
    alone, together = _start(f"alone-{seed}"), _start(f"together-{seed}")

    alone_uploads = [_upload(alone, record_type) for _ in parts]
    alone_results = [
        _load_one(alone, record_type, u, data) for u, data in zip(alone_uploads, parts, strict=True)
    ]
    together_uploads = [_upload(together, record_type) for _ in parts]
    with connection.connection.cursor() as cursor:
        together_results = engine.load_parts(
            cursor,
            tenant_id=together,
            record_type=record_type,
            parts=[engine.Part(u, d) for u, d in zip(together_uploads, parts, strict=True)],
            now=NOW,
            max_line_bytes=engine.DEFAULT_MAX_LINE_BYTES,
        )

    assert [r.rows for r in together_results] == [r.rows for r in alone_results]
    assert _state(together, record_type, together_uploads) == _state(
        alone, record_type, alone_uploads
    )
    assert _supersede_map(together_results, together_uploads) == _supersede_map(
        alone_results, alone_uploads
    )
    resolved = sum(
        r.inserted + r.updated + r.unchanged for x in together_results for r in x.resolved
    )
    resolved_alone = sum(
        r.inserted + r.updated + r.unchanged for x in alone_results for r in x.resolved
    )
    assert resolved == resolved_alone


def test_parts_with_all_new_ids_go_in_with_one_insert_and_count_per_part():
    tenant = _start("fresh")
    parts = [
        b"\n".join(
            json.dumps(customer_row(customer_id=str(uuid.uuid4()))).encode() for _ in range(n)
        )
        + b"\n"
        for n in (1, 3, 2)
    ]
    uploads = [_upload(tenant, "customers") for _ in parts]
    with connection.connection.cursor() as cursor:
        results = engine.load_parts(
            cursor,
            tenant_id=tenant,
            record_type="customers",
            parts=[engine.Part(u, d) for u, d in zip(uploads, parts, strict=True)],
            now=NOW,
            max_line_bytes=engine.DEFAULT_MAX_LINE_BYTES,
        )
    assert [(r.rows.total, r.rows.inserted) for r in results] == [(1, 1), (3, 3), (2, 2)]
