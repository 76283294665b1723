"""Uploads processed by a real Celery worker on the configured broker (SPEC 4 and 5): server-side
dependency order with `waiting` uploads, tenants side by side, strict and file-level
failures, progress and counts as the API shows them once a worker is done."""

from __future__ import annotations

import gzip
import io
import json
import threading
from datetime import datetime

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, transaction
from rest_framework.test import APIClient

from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import (
    Blob,
    Customer,
    Order,
    OrderItem,
    PendingOrder,
    PendingOrderItem,
    Product,
    Upload,
    UploadState,
)
from apps.ingestions.services import (
    UPLOAD_PROCESS_TASK,
    blob_store,
    upload_enqueue,
    upload_run,
    upload_wake,
)
from apps.tenants.services import tenant_create
from tests.conftest import upload_finished, wait_for
from tests.factories import database_url_of_tests

pytestmark = pytest.mark.django_db(transaction=True)

COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
UPLOADS = "/api/v1/ingest/uploads/"

CUSTOMERS = [
    customer_row(customer_id=uid("c1")),
    customer_row(customer_id=uid("c2"), name="Grace Hopper", email="grace@example.com"),
]
PRODUCTS = [
    product_row(product_id=uid("p1")),
    product_row(product_id=uid("p2"), sku="SKU-2", price="5.00"),
]
ORDERS = [
    order_row(order_id=uid("o1"), customer_id=uid("c1")),
    order_row(order_id=uid("o2"), customer_id=uid("c2"), external_order_id="EXT-2"),
]
ORDER_ITEMS = [
    order_item_row(order_item_id=uid("i1"), order_id=uid("o1"), product_id=uid("p1")),
    order_item_row(
        order_item_id=uid("i2"),
        order_id=uid("o1"),
        product_id=uid("p2"),
        quantity=3,
        unit_price="5.00",
        line_total="15.00",
    ),
    order_item_row(order_item_id=uid("i3"), order_id=uid("o2"), product_id=uid("p1")),
]


def post(client, filename: str, data: bytes, **fields) -> dict:
    form = {"file": SimpleUploadedFile(filename, data), **fields}
    response = client.post(COMPREHENSIVE, form, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()


def finished(client, upload: dict, *, timeout: float = 30.0) -> dict:
    return upload_finished(client, upload, timeout=timeout)


def rows(total: int, **counts: int) -> dict:
    base = dict.fromkeys(
        ("inserted", "updated", "unchanged", "rejected", "pending", "duplicates", "warned"), 0
    )
    return {"total": total, **base, **counts}


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_files_uploaded_in_reverse_dependency_order_all_load(celery_worker, tenant_client):
    """order_items, orders, products, customers sent together: the server runs them parents
    first, so every row is inserted and none is left pending."""
    tenant, client = tenant_client()
    files = [
        ("order_items_1.ndjson", ORDER_ITEMS),
        ("orders_1.ndjson", ORDERS),
        ("products_1.ndjson", PRODUCTS),
        ("customers_1.ndjson", CUSTOMERS),
    ]
    # One commit for the four requests: the worker sees all of them before it takes the first.
    with transaction.atomic():
        sent = {name.rsplit("_", 1)[0]: post(client, name, ndjson_bytes(r)) for name, r in files}
    done = {kind: finished(client, upload) for kind, upload in sent.items()}

    for kind, body in done.items():
        count = len(dict(files)[f"{kind}_1.ndjson"])
        assert body["state"] == "completed", body
        assert body["rows"] == rows(count, inserted=count), kind
        assert body["error"] is None
    # Parents finished before their children started.
    for child, parents in [
        ("orders", ("customers", "products")),
        ("order_items", ("customers", "products", "orders")),
    ]:
        for parent in parents:
            assert at(done[parent]["finished_at"]) <= at(done[child]["started_at"]), (
                parent,
                child,
            )
    assert Customer.objects.filter(tenant=tenant).count() == 2
    assert Product.objects.filter(tenant=tenant).count() == 2
    loaded = Order.objects.filter(tenant=tenant).values_list("order_id", "customer_id")
    assert {(str(o), str(c)) for o, c in loaded} == {
        (o["order_id"], o["customer_id"]) for o in ORDERS
    }
    assert {
        str(i)
        for i in OrderItem.objects.filter(tenant=tenant).values_list("order_item_id", flat=True)
    } == {uid("i1"), uid("i2"), uid("i3")}
    assert PendingOrder.objects.count() == PendingOrderItem.objects.count() == 0


def test_an_orders_upload_waits_while_a_customers_upload_is_unfinished(
    celery_worker, tenant_client
):
    """An orders upload sent while the tenant's customers upload is still queued is parked
    `waiting`; when the customers upload finishes, the orders are woken and load fully."""
    tenant, client = tenant_client()
    data = ndjson_bytes(CUSTOMERS)
    blob = blob_store(stream=io.BytesIO(data))
    customers = Upload.objects.create(  # received and queued, but no worker has it yet
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        sha256=blob.sha256,
        size_bytes=blob.size_bytes,
        blob=blob,
        state=UploadState.QUEUED,
    )
    orders = post(client, "orders_1.ndjson", ndjson_bytes(ORDERS))

    waiting = wait_for(lambda: client.get(orders["url"]).json()["state"] == "waiting")
    assert waiting
    parked = client.get(orders["url"]).json()
    assert parked["rows"] == rows(0)
    assert (parked["started_at"], parked["finished_at"]) == (None, None)
    assert Order.objects.filter(tenant=tenant).count() == 0
    listed = client.get(UPLOADS, {"state": "waiting"}).json()
    assert [u["id"] for u in listed["results"]] == [orders["id"]]

    # The customers upload is run (as a worker would); finishing it wakes the orders.
    assert upload_run(upload_id=customers.id).state == UploadState.COMPLETED
    done = finished(client, orders)
    assert done["state"] == "completed"
    assert done["rows"] == rows(2, inserted=2)
    customers.refresh_from_db()
    assert customers.finished_at <= at(done["started_at"])
    assert Order.objects.filter(tenant=tenant).count() == 2
    assert PendingOrder.objects.filter(tenant=tenant).count() == 0


def test_a_child_upload_gives_way_to_its_parents_upload_that_arrives_while_it_runs(
    celery_worker, tenant_client
):
    """Items start (no orders upload yet), then the orders upload arrives before they merge:
    instead of holding every item for orders that are on their way, the items upload is
    rolled back and waits; the orders load, then the items, all inserted, none held."""
    tenant, client = tenant_client()
    post(client, "customers_1.ndjson", ndjson_bytes(CUSTOMERS))
    post(client, "products_1.ndjson", ndjson_bytes(PRODUCTS))
    wait_for(lambda: not Upload.objects.filter(tenant=tenant).exclude(state="completed").exists())
    # The test holds the tenant's merge lock: the items load starts, then waits for it.
    with psycopg.connect(database_url_of_tests(), autocommit=True) as gate:
        gate.execute(
            "SELECT pg_advisory_lock(hashtextextended('ingest:' || %s, 0))", (str(tenant.id),)
        )
        items = post(client, "order_items_1.ndjson", ndjson_bytes(ORDER_ITEMS))
        wait_for(lambda: client.get(items["url"]).json()["state"] == "processing")
        orders = post(client, "orders_1.ndjson", ndjson_bytes(ORDERS))
        gate.execute(
            "SELECT pg_advisory_unlock(hashtextextended('ingest:' || %s, 0))", (str(tenant.id),)
        )
        done_items = finished(client, items)
    done_orders = finished(client, orders)
    assert done_orders["rows"] == rows(2, inserted=2)
    assert done_items["state"] == "completed"
    assert done_items["rows"] == rows(3, inserted=3)
    assert at(done_items["started_at"]) >= at(done_orders["finished_at"])
    assert OrderItem.objects.filter(tenant=tenant).count() == 3
    assert PendingOrderItem.objects.filter(tenant=tenant).count() == 0


def test_a_waiting_upload_is_woken_when_its_blocker_fails(celery_worker, tenant_client):
    """A failed customers upload blocks nothing: `upload_wake` sends the waiting orders, which
    complete with their rows held pending."""
    tenant, client = tenant_client()
    blocker = Upload.objects.create(
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        sha256="0" * 64,
        state=UploadState.QUEUED,
    )
    orders = post(client, "orders_1.ndjson", ndjson_bytes(ORDERS))
    assert wait_for(lambda: client.get(orders["url"]).json()["state"] == "waiting")
    assert upload_wake(tenant_id=tenant.id) == 0  # still blocked: nothing is sent

    Upload.objects.filter(id=blocker.id).update(state=UploadState.FAILED)
    assert upload_wake(tenant_id=tenant.id) == 1
    done = finished(client, orders)
    assert done["state"] == "completed"
    assert done["rows"] == rows(2, pending=2)
    assert PendingOrder.objects.filter(tenant=tenant).count() == 2


def test_an_order_whose_customer_comes_later_is_pending_then_inserted(celery_worker, tenant_client):
    """An orders upload with no customers upload in sight completes with `pending`; the
    customers upload that follows moves those counts from pending to inserted."""
    tenant, client = tenant_client()
    orders = finished(client, post(client, "orders_1.ndjson", ndjson_bytes(ORDERS)))
    assert orders["state"] == "completed"
    assert orders["rows"] == rows(2, pending=2)
    assert PendingOrder.objects.filter(tenant=tenant).count() == 2

    customers = finished(client, post(client, "customers_1.ndjson", ndjson_bytes(CUSTOMERS)))
    assert customers["rows"] == rows(2, inserted=2)
    resolved = client.get(orders["url"]).json()
    assert resolved["state"] == "completed"
    assert resolved["rows"] == rows(2, inserted=2)
    assert Order.objects.filter(tenant=tenant).count() == 2
    assert PendingOrder.objects.filter(tenant=tenant).count() == 0


def test_two_tenants_with_the_same_ids_each_load_their_own_rows(celery_worker, tenant_client):
    """Same UUIDs (and identical orders bytes) in two tenants: two uploads each, no collision."""
    acme, acme_client = tenant_client("Acme")
    globex, globex_client = tenant_client("Globex")
    orders = ndjson_bytes(ORDERS)
    sent = []
    for client, name in [(acme_client, "Acme"), (globex_client, "Globex")]:
        people = [{**row, "name": f"{row['name']} ({name})"} for row in CUSTOMERS]
        sent.append((client, post(client, "customers_1.ndjson", ndjson_bytes(people))))
    for client in (acme_client, globex_client):
        sent.append((client, post(client, "orders_1.ndjson", orders)))
    for client, upload in sent:
        body = finished(client, upload)
        assert body["state"] == "completed", body
        assert body["rows"] == rows(2, inserted=2)

    for tenant, name in [(acme, "Acme"), (globex, "Globex")]:
        names = set(Customer.objects.filter(tenant=tenant).values_list("name", flat=True))
        assert names == {f"Ada Lovelace ({name})", f"Grace Hopper ({name})"}
        assert Order.objects.filter(tenant=tenant).count() == 2
    assert acme_client.get(UPLOADS).json()["count"] == 2
    assert globex_client.get(UPLOADS).json()["count"] == 2


def test_a_strict_upload_with_a_bad_row_fails_with_nothing_loaded(celery_worker, tenant_client):
    """strict=true and one bad row: `failed`, inserted 0, the reject listed."""
    tenant, client = tenant_client()
    lines = [customer_row(customer_id=uid("c1")), customer_row(customer_id=uid("c2"), email="x")]
    data = ndjson_bytes(lines)
    body = finished(client, post(client, "customers_1.ndjson", data, strict="true"))
    assert body["state"] == "failed"
    assert body["strict"] is True
    assert body["rows"]["inserted"] == 0
    assert body["rows"]["rejected"] == 1
    assert body["rows"]["total"] == 2
    assert body["error"] == {
        "code": "strict_rejected",
        "detail": "strict upload refused: 1 row(s) rejected, nothing loaded",
    }
    assert Customer.objects.filter(tenant=tenant).count() == 0
    errors = client.get(body["errors_url"]).json()
    problem = {
        "field": "email",
        "code": "invalid_email",
        "message": "email is not a valid email address: 'x'",
    }
    assert errors["results"] == [
        {"line": 2, **problem, "errors": [problem], "raw": data.decode().splitlines()[1]}
    ]


def test_a_non_strict_upload_with_a_bad_row_loads_the_good_ones(celery_worker, tenant_client):
    """Without strict: `completed_with_errors`, the good rows inserted, the bad one rejected
    (as paginated JSON and NDJSON)."""
    tenant, client = tenant_client()
    data = ndjson_bytes(
        [customer_row(customer_id=uid("c1")), "", customer_row(customer_id=uid("c2"), email="x")]
    )
    body = finished(client, post(client, "customers_1.ndjson", data))
    assert body["state"] == "completed_with_errors"
    assert body["rows"] == rows(2, inserted=1, rejected=1)
    assert body["error"] is None
    assert Customer.objects.filter(tenant=tenant).count() == 1
    problem = {
        "field": "email",
        "code": "invalid_email",
        "message": "email is not a valid email address: 'x'",
    }
    reject = {"line": 3, **problem, "errors": [problem], "raw": data.decode().splitlines()[2]}
    assert client.get(body["errors_url"]).json()["results"] == [reject]
    ndjson = client.get(body["errors_url"], HTTP_ACCEPT="application/x-ndjson")
    assert b"".join(ndjson.streaming_content).decode().splitlines() == [
        '{"line":3,"field":"email","code":"invalid_email",'
        '"message":"email is not a valid email address: \'x\'",'
        '"errors":[{"field":"email","code":"invalid_email",'
        '"message":"email is not a valid email address: \'x\'"}],'
        f'"raw":{_json_str(reject["raw"])}}}'
    ]


def _json_str(text: str) -> str:
    import msgspec

    return msgspec.json.encode(text).decode()


@pytest.mark.parametrize(
    ("data", "detail_start"),
    [
        (
            gzip.compress(ndjson_bytes(CUSTOMERS * 50))[:-12],
            "The gzip data cannot be read: Compressed file ended",
        ),
        (b"\x1f\x8b" + b"\x00" * 64, "The gzip data cannot be read: "),
    ],
    ids=["truncated", "garbage"],
)
def test_a_corrupt_gzip_fails_with_a_file_error_and_nothing_loaded(
    celery_worker, tenant_client, data, detail_start
):
    """Unreadable compression: `failed` with error {code, detail}, no row loaded."""
    tenant, client = tenant_client()
    body = finished(client, post(client, "customers_1.ndjson.gz", data))
    assert body["state"] == "failed"
    assert body["error"]["code"] == "invalid_compression"
    assert body["error"]["detail"].startswith(detail_start), body["error"]
    assert set(body["error"]) == {"code", "detail"}
    assert body["rows"]["inserted"] == 0
    assert body["finished_at"] is not None
    assert Customer.objects.filter(tenant=tenant).count() == 0


def test_progress_and_timestamps_are_filled_once_processed(celery_worker, tenant_client):
    """After completion: rows_done = rows.total, bytes_done = the bytes received, a rate,
    and created_at <= started_at <= finished_at; duplicates inside the file are counted."""
    tenant, client = tenant_client()
    people = [customer_row(customer_id=uid(f"c{n}"), email=f"u{n}@example.com") for n in range(60)]
    people.append(customer_row(customer_id=uid("c0"), name="Ada, again"))
    data = gzip.compress(ndjson_bytes(people))
    body = finished(client, post(client, "customers_1.ndjson.gz", data))
    assert body["state"] == "completed"
    assert body["rows"] == rows(61, inserted=60, duplicates=1)
    progress = body["progress"]
    assert progress["rows_done"] == body["rows"]["total"] == 61
    assert progress["bytes_done"] == body["size_bytes"] == len(data) > 0
    assert progress["rows_per_second"] > 0
    assert at(body["created_at"]) <= at(body["started_at"]) <= at(body["finished_at"])
    assert Customer.objects.get(tenant=tenant, customer_id=uid("c0")).name == "Ada, again"


def test_running_a_finished_upload_again_changes_nothing(celery_worker, tenant_client):
    """A second delivery of the task for a completed upload leaves it and its rows as they are."""
    tenant, client = tenant_client()
    first = finished(client, post(client, "customers_1.ndjson", ndjson_bytes(CUSTOMERS)))
    assert upload_enqueue(upload_id=first["id"])
    # The worker takes tasks in order: once a later upload is done, the repeat has run.
    finished(client, post(client, "products_1.ndjson", ndjson_bytes(PRODUCTS)))
    again = client.get(first["url"]).json()
    assert again == first
    assert Customer.objects.filter(tenant=tenant).count() == 2


def test_services_send_the_upload_task_by_a_name_workers_know():
    """Services never import tasks: the name they send is the registered task's."""
    from apps.ingestions.tasks import upload_process_task
    from main.celery import app

    assert upload_process_task.name == UPLOAD_PROCESS_TASK
    assert UPLOAD_PROCESS_TASK in app.tasks


def _race(key: str, data: bytes, *, clients: int = 4, headers: dict | None = None) -> list:
    """`clients` threads post the same file at the same moment; their responses."""
    barrier = threading.Barrier(clients)
    responses = []

    def send() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_X_API_KEY=key)
            form = {"file": SimpleUploadedFile("customers_1.ndjson", data)}
            barrier.wait()
            response = client.post(COMPREHENSIVE, form, format="multipart", headers=headers or {})
            responses.append(response)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


BIG_CUSTOMERS = ndjson_bytes(
    [customer_row(customer_id=uid(f"c{n}"), email=f"u{n}@example.com") for n in range(2000)]
)


def test_identical_bytes_sent_at_once_make_one_upload(celery_worker):
    """Concurrent identical uploads: one 202, the others 200 with the same upload."""
    tenant, issued = tenant_create(name="Racer")
    responses = _race(issued.raw, BIG_CUSTOMERS)
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert Upload.objects.filter(tenant=tenant).count() == 1
    assert Blob.objects.count() == 1
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    body = finished(client, responses[0].json())
    assert body["rows"] == rows(2000, inserted=2000)
    assert Customer.objects.filter(tenant=tenant).count() == 2000


def test_one_idempotency_key_sent_at_once_runs_one_request(celery_worker):
    """Concurrent requests with one key: one is processed; the others get 409 while it runs
    (or its replay once done), and one upload exists."""
    tenant, issued = tenant_create(name="Racer")
    responses = _race(issued.raw, BIG_CUSTOMERS, headers={"Idempotency-Key": "once"})
    fresh = [r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r]
    assert len(fresh) == 1
    for response in responses:
        if response is fresh[0]:
            continue
        if response.status_code == 409:
            assert json.loads(response.content)["code"] == "idempotency_in_flight"
        else:
            assert response["Idempotent-Replayed"] == "true"
            assert response.json() == fresh[0].json()
    assert Upload.objects.filter(tenant=tenant).count() == 1
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    assert finished(client, fresh[0].json())["state"] == "completed"
