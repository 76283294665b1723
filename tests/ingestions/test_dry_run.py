"""Dry runs (SPEC 10, issue 15 part 4) through the API and a real worker: a dry run reports
exactly what a real run of the same file would, and leaves the final tables, the pending
holds, the other uploads' counts and the database's tables as they were."""

from __future__ import annotations

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from apps.ingestions import engine
from apps.ingestions.engine.parse import FIRST_CHUNK_ROWS
from apps.ingestions.engine.stage import staging_name
from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import Customer, Reject, Upload, UploadState
from apps.ingestions.services import upload_wake
from tests.conftest import upload_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
# Every table a load may write data to: the final tables and the pending holds.
DATA_TABLES = [spec.table for spec in engine.RECORDS.values()] + [
    spec.pending_table for spec in engine.RECORDS.values() if spec.holds_pending
]


def post(client, filename: str, data: bytes, *, status: int = 202, **fields) -> dict:
    form = {"file": SimpleUploadedFile(filename, data), **fields}
    response = client.post(COMPREHENSIVE, form, format="multipart")
    assert response.status_code == status, response.content
    return response.json()


def finished(client, upload: dict, *, timeout: float = 60.0) -> dict:
    return upload_finished(client, upload, timeout=timeout)


def load(client, filename: str, data: bytes, **fields) -> dict:
    return finished(client, post(client, filename, data, **fields))


def checksums(*besides: str) -> dict[str, str]:
    """An md5 of every data table, of the uploads' state and counts, and of the rejects,
    of every upload but those in `besides` (dry runs, whose own they are meant to be)."""
    queries = {
        table: f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"
        for table in DATA_TABLES
    }
    queries["uploads"] = (
        "SELECT md5(coalesce(string_agg(concat_ws(':', id, state, error_code, rows_total, "
        "rows_inserted, rows_updated, rows_unchanged, rows_rejected, rows_pending, "
        "rows_duplicates), ',' ORDER BY id), '')) FROM uploads WHERE id::text <> ALL(%(besides)s)"
    )
    queries["rejects"] = (
        "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) FROM rejects t "
        "WHERE upload_id::text <> ALL(%(besides)s)"
    )
    found = {}
    with connection.cursor() as cursor:
        for name, query in queries.items():
            cursor.execute(query, {"besides": list(besides)})
            found[name] = cursor.fetchone()[0]
    return found


def rejects(upload: dict) -> list[tuple]:
    return list(
        Reject.objects.filter(upload_id=upload["id"])
        .order_by("line")
        .values_list("line", "field", "code", "message", "raw", "errors")
    )


def staging_left(upload: dict) -> bool:
    """Whether the staging table of the upload's load is still in the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (staging_name(upload["id"]),))
        return cursor.fetchone()[0]


def report(upload: dict) -> tuple:
    """What a run reports: state, error, counts and rejects."""
    return upload["state"], upload["error"], upload["rows"], rejects(upload)


def rows(total: int, **counts: int) -> dict:
    base = dict.fromkeys(
        ("inserted", "updated", "unchanged", "rejected", "pending", "duplicates", "warned"), 0
    )
    return {"total": total, **base, **counts}


def _known_state(client) -> tuple[dict, dict]:
    """Customers c1 and c2 and product p1 loaded; orders o1, o2 loaded and o3 held for
    customer c9 (upload A); items i1 loaded and i2 held for order o5 (upload B)."""
    load(client, "customers_1.ndjson", ndjson_bytes([
        customer_row(customer_id=uid("c1")),
        customer_row(customer_id=uid("c2"), email="grace@example.com"),
    ]))  # fmt: skip
    load(client, "products_1.ndjson", ndjson_bytes([product_row(product_id=uid("p1"))]))
    held_orders = load(client, "orders_1.ndjson", ndjson_bytes([
        order_row(order_id=uid("o1"), customer_id=uid("c1")),
        order_row(order_id=uid("o2"), customer_id=uid("c2"), external_order_id="EXT-2"),
        order_row(order_id=uid("o3"), customer_id=uid("c9"), external_order_id="EXT-3"),
    ]))  # fmt: skip
    held_items = load(client, "order_items_1.ndjson", ndjson_bytes([
        order_item_row(order_item_id=uid("i1"), order_id=uid("o1")),
        order_item_row(order_item_id=uid("i2"), order_id=uid("o5")),
    ]))  # fmt: skip
    assert held_orders["rows"] == rows(3, inserted=2, pending=1)
    assert held_items["rows"] == rows(2, inserted=1, pending=1)
    return held_orders, held_items


# Orders of every outcome: o1 unchanged, o2 updated, o4 inserted, o5 inserted (the missing
# parent of upload B's held item i2), o6 twice (a duplicate), o3 held again for c9 (it
# replaces upload A's held o3), o7 held for c8, and two rejects.
ORDERS_OF_EVERY_OUTCOME = ndjson_bytes([
    order_row(order_id=uid("o1"), customer_id=uid("c1")),
    order_row(order_id=uid("o2"), customer_id=uid("c2"), external_order_id="EXT-2",
              order_status="shipped"),
    order_row(order_id=uid("o4"), customer_id=uid("c1"), external_order_id="EXT-4"),
    order_row(order_id=uid("o5"), customer_id=uid("c2"), external_order_id="EXT-5"),
    order_row(order_id=uid("o6"), customer_id=uid("c1"), external_order_id="EXT-6"),
    order_row(order_id=uid("o6"), customer_id=uid("c1"), external_order_id="EXT-6b"),
    order_row(order_id=uid("o3"), customer_id=uid("c9"), external_order_id="EXT-3"),
    order_row(order_id=uid("o7"), customer_id=uid("c8"), external_order_id="EXT-7"),
    order_row(order_id="not-a-uuid", currency="euro"),
    "{not json",
])  # fmt: skip


def test_a_dry_run_reports_what_the_real_run_does_and_changes_nothing(celery_worker, tenant_client):
    """Over a file with inserts, updates, unchanged rows, a duplicate, rejects and held rows,
    which would also replace one upload's held row and let in another's: the dry run's
    counts and rejects are those of the real run of the same bytes that follows, while the
    data tables, the other uploads' counts and rejects are identical before and after it."""
    tenant, client = tenant_client()
    other, other_client = tenant_client("Globex")  # another tenant's data stays too
    load(other_client, "customers_1.ndjson", ndjson_bytes([customer_row()]))
    held_orders, held_items = _known_state(client)
    before = checksums()

    dry = load(client, "orders_2.ndjson", ORDERS_OF_EVERY_OUTCOME, dry_run="true")

    assert dry["dry_run"] is True
    expected_rows = rows(10, inserted=3, updated=1, unchanged=1, duplicates=1, pending=2)
    assert dry["rows"] == {**expected_rows, "rejected": 2}
    assert dry["state"] == "completed_with_errors"
    assert [r[:3] for r in rejects(dry)] == [
        (9, "order_id", "invalid_uuid"),
        (10, "", "invalid_json"),
    ]
    assert rejects(dry)[0][5] != []  # every problem of the row is kept: its `errors` too
    assert checksums(dry["id"]) == before
    assert not staging_left(dry)

    real = load(client, "orders_2.ndjson", ORDERS_OF_EVERY_OUTCOME)  # the same bytes: 202

    assert real["id"] != dry["id"]
    assert real["dry_run"] is False
    assert report(real) == report(dry)
    # ... and the real run did what the dry run undid: it moved the other uploads' rows
    assert client.get(held_orders["url"]).json()["rows"] == rows(3, inserted=2, duplicates=1)
    assert client.get(held_items["url"]).json()["rows"] == rows(2, inserted=2)
    assert checksums(real["id"]) != before
    del tenant, other


def test_a_strict_dry_run_reports_the_strict_refusal_or_the_full_load(celery_worker, tenant_client):
    """Strict and dry run: with a bad row it fails as the strict run does (its rejects
    listed); clean, it completes with every row counted; neither changes anything."""
    tenant, client = tenant_client()
    _known_state(client)
    before = checksums()

    refused = load(client, "orders_2.ndjson", ORDERS_OF_EVERY_OUTCOME, strict="true", dry_run="1")
    clean = ndjson_bytes(
        [order_row(order_id=uid(f"s{n}"), customer_id=uid("c1")) for n in range(3)]
    )
    accepted = load(client, "orders_3.ndjson", clean, strict="true", dry_run="1")

    assert (refused["state"], refused["error"]["code"]) == ("failed", "strict_rejected")
    assert refused["rows"] == rows(10, rejected=2)
    assert (accepted["state"], accepted["rows"]) == ("completed", rows(3, inserted=3))
    assert checksums(accepted["id"], refused["id"]) == before
    for data, dry in ((ORDERS_OF_EVERY_OUTCOME, refused), (clean, accepted)):
        real = load(client, dry["filename"], data, strict="true")
        assert report(real) == report(dry)
    del tenant


def test_a_dry_run_of_several_chunks_leaves_no_staging_table(
    celery_worker, tenant_client, monkeypatch
):
    """A file longer than the first chunk is staged over the load's second connection, into
    a table of its own: the dry run drops it. Its rejects in every chunk are kept, through
    a spool that goes to disk (made small here), and match the real run's."""
    monkeypatch.setattr("apps.ingestions.engine.dry_run._SPOOL_BYTES", 4096)  # the worker's
    tenant, client = tenant_client()
    count = FIRST_CHUNK_ROWS + 1500
    lines = [
        customer_row(customer_id=uid(f"m{n}"), email="bad" if n % 7 == 0 else "m@example.com")
        for n in range(count)
    ]
    data = ndjson_bytes(lines)
    bad = len(range(0, count, 7))

    dry = load(client, "customers_many.ndjson", data, dry_run="true")

    assert dry["rows"] == rows(count, inserted=count - bad, rejected=bad)
    assert len(rejects(dry)) == bad
    assert rejects(dry)[-1][0] > FIRST_CHUNK_ROWS  # rejects of the second chunk too
    assert not staging_left(dry)
    assert not Customer.objects.filter(tenant=tenant).exists()
    real = load(client, "customers_many.ndjson", data)
    assert report(real) == report(dry)
    assert Customer.objects.filter(tenant=tenant).count() == count - bad


def test_identical_bytes_are_never_taken_for_a_dry_run_or_for_a_real_upload(
    celery_worker, tenant_client
):
    """A real upload after a dry run of the same bytes is new (202) and loads; a dry run
    after it is new too, and runs on the data as it now is; a real upload of the same
    bytes again is the real one (200). Each dry run of the same bytes runs anew."""
    tenant, client = tenant_client()
    data = ndjson_bytes([customer_row(customer_id=uid("c1"))])

    first_dry = load(client, "customers_1.ndjson", data, dry_run="true")
    real = load(client, "customers_1.ndjson", data)
    second_dry = load(client, "customers_1.ndjson", data, dry_run="true")
    again = post(client, "customers_1.ndjson", data, status=200)

    assert len({first_dry["id"], real["id"], second_dry["id"]}) == 3
    assert first_dry["rows"] == real["rows"] == rows(1, inserted=1)
    assert second_dry["rows"] == rows(1, unchanged=1)
    assert again["id"] == real["id"]
    assert Customer.objects.filter(tenant=tenant).count() == 1


def test_one_idempotency_key_is_not_both_a_dry_run_and_a_real_upload(celery_worker, tenant_client):
    """`dry_run` is part of the request: the key of a dry run sent again without it is 422."""
    _, client = tenant_client()
    data = ndjson_bytes([customer_row()])
    form = {"file": SimpleUploadedFile("customers_1.ndjson", data), "dry_run": "true"}
    key = {"Idempotency-Key": "check-then-load"}
    first = client.post(COMPREHENSIVE, form, format="multipart", headers=key)
    form = {"file": SimpleUploadedFile("customers_1.ndjson", data)}
    second = client.post(COMPREHENSIVE, form, format="multipart", headers=key)
    assert first.status_code == 202, first.content
    assert (second.status_code, second.json()["code"]) == (422, "idempotency_mismatch")
    finished(client, first.json())  # not left running into the next test's database


def test_a_real_upload_never_waits_for_a_dry_run(celery_worker, tenant_client):
    """An unfinished dry run of customers brings no customers: orders sent after it run at
    once instead of waiting for it."""
    tenant, client = tenant_client()
    Upload.objects.create(
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        sha256="0" * 64,
        state=UploadState.QUEUED,
        dry_run=True,
    )
    orders = load(client, "orders_1.ndjson", ndjson_bytes([order_row()]))
    assert (orders["state"], orders["rows"]) == ("completed", rows(1, pending=1))


def test_a_dry_run_waits_for_the_real_uploads_of_its_parents(celery_worker, tenant_client):
    """A dry run of orders waits while a real customers upload is unfinished, as the real
    run would, so that it reports on the customers that upload brings."""
    tenant, client = tenant_client()
    blocker = Upload.objects.create(
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        sha256="0" * 64,
        state=UploadState.QUEUED,
    )
    dry = post(client, "orders_1.ndjson", ndjson_bytes([order_row()]), dry_run="true")
    assert wait_for(lambda: client.get(dry["url"]).json()["state"] == "waiting")

    Upload.objects.filter(id=blocker.id).update(state=UploadState.FAILED)
    assert upload_wake(tenant_id=tenant.id) == 1
    assert finished(client, dry)["rows"] == rows(1, pending=1)


def test_a_dry_run_through_a_session_or_tus_is_a_dry_run(celery_worker, tenant_client):
    """`dry_run` when a session is opened (JSON) or in tus metadata goes to its upload."""
    tenant, client = tenant_client()
    data = ndjson_bytes([customer_row()])
    session = client.post(
        "/api/v1/ingest/sessions/",
        {"filename": "customers_1.ndjson", "size": len(data), "dry_run": True},
        format="json",
    ).json()
    assert session["dry_run"] is True
    via_session = client.patch(
        session["url"],
        data,
        content_type="application/offset+octet-stream",
        headers={"Upload-Offset": "0"},
    ).json()
    metadata = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"filename": "customers_1.ndjson", "dry_run": "true"}.items()
    )
    created = client.post(
        "/api/v1/ingest/tus/",
        data,
        content_type="application/offset+octet-stream",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
                 "Upload-Metadata": metadata},
    )  # fmt: skip
    assert created.status_code == 201, created.content
    via_tus = Upload.objects.exclude(id=via_session["id"]).get(tenant=tenant)

    for upload in (via_session, {"url": f"/api/v1/ingest/uploads/{via_tus.id}/"}):
        done = finished(client, upload)
        assert (done["dry_run"], done["rows"]) == (True, rows(1, inserted=1))
    assert not Customer.objects.filter(tenant=tenant).exists()


def test_a_dry_runs_rows_are_not_counted_as_loaded_in_the_metrics(celery_worker, tenant_client):
    """`ingest_rows_total` adds up what was loaded: a dry run's counts are not in it."""
    tenant, client = tenant_client()
    load(client, "customers_1.ndjson", ndjson_bytes([customer_row()]), dry_run="true")
    text = APIClient().get("/metrics").content.decode()
    assert f'tenant_id="{tenant.id}"' not in text
