"""Delivering events end to end: a real worker (on the configured broker) POSTs to a real
HTTP receiver on loopback, run by the test; signatures are checked with the Standard
Webhooks library; retries, redirects, a receiver down, the last attempt, redelivery."""

from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from standardwebhooks import Webhook

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.webhooks.models import WebhookDelivery, WebhookEvent
from apps.webhooks.services import deliveries_wake, webhook_sweep
from tests.conftest import upload_finished, wait_for
from tests.webhooks.conftest import ALL_EVENTS, Answer, register

pytestmark = pytest.mark.django_db(transaction=True)


def _upload(client, filename: str, rows: list, **params) -> dict:
    file = SimpleUploadedFile(filename, ndjson_bytes(rows))
    answer = client.post(
        "/api/v1/ingest/comprehensive/", {"file": file, **params}, format="multipart"
    )
    assert answer.status_code == 202, answer.content
    return answer.json()


def _delivery(endpoint_id: str, state: str | None = None) -> WebhookDelivery | None:
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
    if state is not None:
        deliveries = deliveries.filter(state=state)
    return deliveries.order_by("-id").first()


def _verified(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def test_a_completed_upload_is_delivered_signed_with_the_uploads_api_representation(
    celery_worker, tenant_client, receiver
):
    """`upload.completed` reaches the receiver with Standard Webhooks headers, a signature
    the library accepts, and `data` equal to the API's GET of the upload."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ALL_EVENTS)
    upload = upload_finished(client, _upload(client, "customers_1.ndjson", [customer_row()]))
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))

    [request] = receiver.requests
    body = _verified(endpoint["secret"], request)
    assert body == {"type": "upload.completed", "timestamp": body["timestamp"], "data": upload}
    assert body["data"] == client.get(upload["url"]).json()
    assert request.headers["webhook-id"].startswith("msg_")
    assert request.headers["Content-Type"] == "application/json"
    assert body["timestamp"].endswith("Z")


def test_a_slow_receiver_does_not_hold_up_the_upload_it_reports(
    celery_worker, tenant_client, receiver
):
    """While the receiver still holds the request, the upload already reads `completed`:
    delivery runs after the upload's transaction, never inside it."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(Answer(200, delay=1.5))
    sent = _upload(client, "customers_1.ndjson", [customer_row()])
    wait_for(lambda: receiver.requests)
    assert client.get(sent["url"]).json()["state"] == "completed"
    assert _delivery(endpoint["id"]).state == "pending"  # the request is still out
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))


def test_a_dry_run_a_rejecting_and_a_strict_failed_upload_each_send_their_event(
    celery_worker, tenant_client, receiver
):
    """A dry run sends its event with `dry_run: true`; rejects give
    `upload.completed_with_errors`; a refused strict upload `upload.failed`."""
    _, client = tenant_client()
    register(client, receiver.url, ALL_EVENTS)
    bad = {**customer_row(customer_id=uid("bad")), "email": "nope"}
    dry = upload_finished(
        client, _upload(client, "customers_1.ndjson", [customer_row()], dry_run="true")
    )
    some = upload_finished(client, _upload(client, "customers_2.ndjson", [customer_row(), bad]))
    strict = upload_finished(client, _upload(client, "customers_3.ndjson", [bad], strict="true"))
    wait_for(lambda: len(receiver.requests) == 3)
    received = {json.loads(r.body)["data"]["id"]: json.loads(r.body) for r in receiver.requests}
    assert received[dry["id"]]["type"] == "upload.completed"
    assert received[dry["id"]]["data"] == dry
    assert dry["dry_run"] is True
    assert received[some["id"]]["type"] == "upload.completed_with_errors"
    assert received[some["id"]]["data"] == some
    assert received[strict["id"]]["type"] == "upload.failed"
    assert received[strict["id"]]["data"] == strict


def test_an_upload_failing_on_a_file_error_sends_upload_failed_with_its_error(
    celery_worker, tenant_client, receiver, settings
):
    """A gzip file past the decompression limit fails in the worker: its state and its
    `upload.failed` event commit together, the event carrying the upload's `error`."""
    _, client = tenant_client()
    register(client, receiver.url, ["upload.failed"])
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 100  # the worker runs in this process
    rows = [customer_row(customer_id=uid(f"gz{n}")) for n in range(50)]
    file = SimpleUploadedFile("customers_1.ndjson.gz", ndjson_bytes(rows, compression="gzip"))
    sent = client.post("/api/v1/ingest/comprehensive/", {"file": file}, format="multipart")
    failed = upload_finished(client, sent.json())
    wait_for(lambda: receiver.requests)
    body = json.loads(receiver.requests[0].body)
    assert body["type"] == "upload.failed"
    assert body["data"] == failed
    assert failed["error"]["code"] == "decompression_bomb"


def test_during_a_rotation_both_the_old_and_the_new_secret_verify(
    celery_worker, tenant_client, receiver
):
    """After rotate-secret, `webhook-signature` carries two signatures: the library accepts
    the body with the old secret and with the new one."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    new = client.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret/").json()["secret"]
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    wait_for(lambda: receiver.requests)
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert _verified(endpoint["secret"], request)["type"] == "webhook.test"
    assert _verified(new, request)["type"] == "webhook.test"


def test_a_receiver_answering_500_gets_the_event_again_until_it_answers_200(
    celery_worker, tenant_client, receiver
):
    """500, 500, then 200: delivered on the third attempt, the same `webhook-id` and body
    each time; the log shows every attempt."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(Answer(500), Answer(503))
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    delivered = wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    assert delivered.attempts == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    log = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries/").json()["results"]
    [entry] = log
    assert entry["id"] == sent["id"]
    assert (entry["state"], entry["attempt"], entry["status_code"], entry["error"]) == (
        "delivered",
        3,
        200,
        "",
    )
    assert entry["next_attempt_at"] is None
    assert [(a["attempt"], a["status_code"], a["error"]) for a in entry["attempts"]] == [
        (1, 500, "HTTP 500"),
        (2, 503, "HTTP 503"),
        (3, 200, ""),
    ]
    assert all(a["latency_ms"] is not None for a in entry["attempts"])


def test_a_receiver_that_is_down_gets_the_event_once_it_is_back(
    celery_worker, tenant_client, receiver, settings
):
    """Connections refused while the receiver is down are failed attempts, retried; once
    it is up again the event is delivered."""
    settings.WEBHOOK_RETRY_SCHEDULE = [0.3] * 20
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.stop()
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    wait_for(lambda: (d := _delivery(endpoint["id"])) and d.attempts >= 2)
    failed = _delivery(endpoint["id"])
    assert failed.state == "pending"
    assert failed.last_status_code is None
    assert failed.last_error.startswith("ConnectError")
    receiver.start()
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    assert len(receiver.requests) == 1


def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(
    celery_worker, tenant_client, receiver
):
    """A 302 is a failed attempt: its Location is never requested; the retry delivers."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    elsewhere = receiver.url.replace("/hook", "/elsewhere")
    receiver.answer(Answer(302, headers={"Location": elsewhere}))
    client.post(f"/api/v1/webhooks/{endpoint['id']}/test/")
    delivered = wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    first = delivered.attempt_log.get(number=1)
    assert (first.status_code, first.error) == (302, "HTTP 302 (redirects are not followed)")
    assert receiver.to("/elsewhere") == []
    assert len(receiver.to("/hook")) == 2


def test_after_its_last_attempt_a_delivery_fails_and_its_endpoint_is_marked_failing(
    celery_worker, tenant_client, receiver
):
    """Every attempt answered 500: the delivery ends failed after 1 + len(schedule)
    attempts and the endpoint shows `failing`; a later success clears it."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(*[Answer(500)] * 4)
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    failed = wait_for(lambda: _delivery(endpoint["id"], "failed"))
    assert (failed.attempts, failed.next_attempt_at, len(receiver.requests)) == (4, None, 4)
    shown = client.get(f"/api/v1/webhooks/{endpoint['id']}/").json()
    assert shown["failing"] is True
    assert shown["failing_since"] is not None

    again = client.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{sent['id']}/redeliver/")
    assert again.status_code == 202
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    assert client.get(f"/api/v1/webhooks/{endpoint['id']}/").json()["failing"] is False
    assert {r.headers["webhook-id"] for r in receiver.requests} == {sent["event_id"]}


def test_a_rolled_back_state_change_writes_no_event_and_sends_nothing(
    celery_worker, tenant_client, receiver
):
    """An upload's failure recorded in a transaction that rolls back leaves no event, no
    delivery, and the receiver hears nothing."""
    from apps.ingestions.models import Upload
    from apps.ingestions.services.events import upload_event

    tenant, client = tenant_client()
    register(client, receiver.url, ALL_EVENTS)
    upload = upload_finished(client, _upload(client, "customers_1.ndjson", [customer_row()]))
    wait_for(lambda: len(receiver.requests) == 1)
    events = WebhookEvent.objects.count()

    @transaction.atomic
    def fail_then_break() -> None:
        Upload.objects.filter(id=upload["id"]).update(state="failed")
        upload_event(tenant_id=tenant.id, upload_id=upload["id"], state="failed")
        raise RuntimeError("the change fails after the event was written")

    with pytest.raises(RuntimeError):
        fail_then_break()
    assert WebhookEvent.objects.count() == events
    assert Upload.objects.get(id=upload["id"]).state == "completed"
    webhook_sweep()
    assert len(receiver.requests) == 1


def test_a_delivery_whose_wake_up_was_lost_is_delivered_by_the_sweep(
    celery_worker, tenant_client, receiver
):
    """A delivery in PostgreSQL whose message never reached the broker (the broker was
    down, or restarted and lost it) is found and sent by the periodic sweep."""
    from apps.webhooks.services import event_record

    tenant, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.failed"])
    with transaction.atomic():
        event_record(tenant_id=tenant.id, type="upload.failed", data=lambda: {"id": "x"})
        transaction.get_connection().run_on_commit.clear()  # the wake-up is lost
    assert _delivery(endpoint["id"], "pending")
    assert receiver.requests == []
    celery_worker.send_task("apps.webhooks.tasks.webhook_sweep_task")
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    assert json.loads(receiver.requests[0].body)["data"] == {"id": "x"}


def test_expired_held_rows_send_pending_expired_with_the_upload(
    celery_worker, tenant_client, receiver
):
    """Orders held for a customer that never comes: when they expire, `pending.expired`
    carries the upload as the API then shows it (its rows now rejected)."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.ingestions.services import pending_expire

    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["pending.expired"])
    orders = _upload(client, "orders_1.ndjson", [order_row(customer_id=uid("never"))])
    held = upload_finished(client, orders)
    assert held["rows"]["pending"] == 1
    assert pending_expire(now=timezone.now() + timedelta(days=8)) == 1
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    body = json.loads(receiver.requests[0].body)
    assert body["type"] == "pending.expired"
    assert body["data"] == client.get(orders["url"]).json()
    assert (body["data"]["state"], body["data"]["rows"]["rejected"]) == (
        "completed_with_errors",
        1,
    )


def test_expired_held_rows_of_a_live_batch_send_pending_expired_with_the_batch(
    celery_worker, tenant_client, receiver
):
    """A live batch's order held for a customer that never comes: `pending.expired`
    carries the batch, as `GET /ingest/records/batches/{id}/` then shows it."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.ingestions.services import pending_expire

    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["pending.expired"])
    rows = [order_row(customer_id=uid("never-live"))]
    accepted = client.post(
        "/api/v1/ingest/records/orders/", ndjson_bytes(rows), content_type="application/x-ndjson"
    )
    assert accepted.status_code == 202, accepted.content
    batch_url = accepted.json()["url"]
    wait_for(lambda: client.get(batch_url).json()["state"] == "merged")
    assert pending_expire(now=timezone.now() + timedelta(days=8)) == 1
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    [request] = receiver.requests
    body = json.loads(request.body)
    assert body["type"] == "pending.expired"
    assert body["data"] == client.get(batch_url).json()
    assert body["data"]["rows"]["rejected"] == 1


def test_a_merged_batch_of_live_records_sends_records_batch_merged(
    celery_worker, tenant_client, receiver
):
    """A live batch merged by the worker: `records.batch_merged` carries the batch as
    `GET /ingest/records/batches/{id}/` shows it."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["records.batch_merged"])
    rows = [customer_row(customer_id=uid("live-1")), customer_row(customer_id=uid("live-2"))]
    accepted = client.post(
        "/api/v1/ingest/records/customers/", ndjson_bytes(rows), content_type="application/x-ndjson"
    )
    assert accepted.status_code == 202, accepted.content
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    body = json.loads(receiver.requests[0].body)
    assert body["type"] == "records.batch_merged"
    assert body["data"] == client.get(accepted.json()["url"]).json()
    assert (body["data"]["state"], body["data"]["rows"]["inserted"]) == ("merged", 2)


def test_sending_a_delivery_twice_makes_one_attempt(celery_worker, tenant_client, receiver):
    """Two wake-ups for one due delivery: the first takes it, the second finds it taken."""
    _, client = tenant_client()
    endpoint = register(client, receiver.url, ["upload.completed"])
    receiver.answer(Answer(200, delay=0.5))
    sent = client.post(f"/api/v1/webhooks/{endpoint['id']}/test/").json()
    deliveries_wake(delivery_ids=[sent["id"], sent["id"]])
    wait_for(lambda: _delivery(endpoint["id"], "delivered"))
    assert len(receiver.requests) == 1


def test_slow_receivers_never_hold_the_worker_s_slot_an_upload_needs(
    celery_worker, tenant_client, receiver
):
    """One tenant's six test events go to a receiver that answers after the attempt's time
    limit; another tenant's upload, sent just after, completes at once on the worker's
    one slot: the attempts are made beside it (they took 6 x 2 s of it)."""
    _, sender = tenant_client("Slow receivers")
    receiver.answer(*[Answer(200, delay=3)] * 6)
    endpoint = register(sender, receiver.url, ["upload.failed"])
    for _ in range(6):
        assert sender.post(f"/api/v1/webhooks/{endpoint['id']}/test/").status_code == 202
    _, client = tenant_client("Busy shop")
    started = time.monotonic()
    upload = upload_finished(client, _upload(client, "customers_1.ndjson", [customer_row()]))
    assert upload["state"] == "completed"
    assert time.monotonic() - started < 4
    wait_for(lambda: len(receiver.requests) == 6, timeout=30)  # and each was sent
