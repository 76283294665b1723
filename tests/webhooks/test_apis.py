"""The webhook endpoints API: register (the secret shown once), list, show, change, delete,
rotate the secret, send a test event; the delivery log and redeliver; validation errors as
problem+json; another tenant's endpoints are not found."""

from __future__ import annotations

import base64
import json
import threading
import time
from urllib.parse import quote

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import NotFoundError
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import (
    delivery_redeliver,
    endpoint_delete,
    endpoint_secret_rotate,
    endpoint_secrets,
    endpoint_test,
    endpoint_update,
    event_record,
)
from apps.webhooks.services.signing import secret_expires
from tests.webhooks.conftest import ALL_EVENTS, register

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, title: str, detail: str, code: str, **extra) -> None:
    """An RFC 9457 answer with exactly these members."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    assert json.loads(response.content) == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
        "request_id": response["X-Request-Id"],
    }


def test_a_registered_endpoint_answers_201_with_its_secret_shown_only_then(tenant_client):
    """POST answers 201 with the id and a `whsec_` secret; GET and the list never show it."""
    _, client = tenant_client()
    created = register(
        client, "http://127.0.0.1:9/hook", ["upload.failed", "upload.completed"], description="ops"
    )
    secret = created.pop("secret")
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    endpoint_id = created["id"]
    assert created == {
        "id": endpoint_id,
        "url": "http://127.0.0.1:9/hook",
        "events": ["upload.completed", "upload.failed"],
        "description": "ops",
        "enabled": True,
        "failing": False,
        "failing_since": None,
        "deliveries_url": f"http://testserver/api/v1/webhooks/{endpoint_id}/deliveries/",
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }
    shown = client.get(f"/api/v1/webhooks/{endpoint_id}/")
    assert shown.status_code == 200
    assert shown.json() == created
    listed = client.get("/api/v1/webhooks/").json()
    assert (listed["count"], listed["results"]) == (1, [created])
    assert secret not in shown.content.decode() + json.dumps(listed)


def test_an_endpoint_is_changed_disabled_and_deleted(tenant_client):
    """PATCH changes url, events, description and enabled; DELETE answers 204, then 404."""
    _, client = tenant_client()
    endpoint_id = register(client, "http://127.0.0.1:9/a", ["upload.failed"])["id"]
    changed = client.patch(
        f"/api/v1/webhooks/{endpoint_id}/",
        {"url": "https://127.0.0.1:9/b", "events": ALL_EVENTS, "enabled": False},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["url"], body["events"], body["enabled"], body["description"]) == (
        "https://127.0.0.1:9/b",
        sorted(ALL_EVENTS),
        False,
        "",
    )
    assert client.delete(f"/api/v1/webhooks/{endpoint_id}/").status_code == 204
    assert client.get(f"/api/v1/webhooks/{endpoint_id}/").status_code == 404
    assert not WebhookEndpoint.objects.filter(id=endpoint_id).exists()


def test_rotating_the_secret_shows_a_new_one_and_keeps_the_old_signing_for_a_day(
    tenant_client,
):
    """rotate-secret answers the new secret; the old one is kept to sign beside it for 24 h."""

    _, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/")
    assert rotated.status_code == 200, rotated.content
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != created["secret"]
    endpoint = WebhookEndpoint.objects.get(id=created["id"])
    assert endpoint_secrets(endpoint) == [new, created["secret"]]
    [previous] = endpoint.previous_secrets
    hours = (secret_expires(previous) - endpoint.updated_at).total_seconds() / 3600
    assert round(hours) == 24
    previous["expires_at"] = endpoint.updated_at.isoformat()  # the 24 hours are over
    assert endpoint_secrets(endpoint) == [new]


def test_a_second_rotation_keeps_every_secret_still_in_its_day_signing(tenant_client):
    """Rotated twice (the first answer lost, say): the first secret signs until its own 24
    hours are over, beside the second and the third; one whose time is up is dropped at
    the next rotation."""
    _, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    second = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/").json()["secret"]
    third = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/").json()["secret"]
    endpoint = WebhookEndpoint.objects.get(id=created["id"])
    assert endpoint_secrets(endpoint) == [third, second, created["secret"]]
    first_ends, second_ends = (secret_expires(p) for p in reversed(endpoint.previous_secrets))
    assert first_ends < second_ends  # each its own day, from its own rotation
    endpoint.previous_secrets[1]["expires_at"] = timezone.now().isoformat()  # the first's
    endpoint.save(update_fields=["previous_secrets"])
    assert endpoint_secrets(endpoint) == [third, second]
    fourth = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/").json()["secret"]
    endpoint.refresh_from_db()
    assert endpoint_secrets(endpoint) == [fourth, third, second]
    assert [p["secret"] for p in endpoint.previous_secrets] == [third, second]


@pytest.mark.parametrize("operation", ["patch", "delete", "rotate", "test", "redeliver"])
def test_an_endpoint_deleted_by_another_request_meanwhile_is_a_404(tenant_client, operation):
    """A request that found the endpoint, then finds it deleted by another request when it
    takes its lock, answers 404 (it was a 500: DoesNotExist, or a foreign key broken by a
    delivery added to a deleted endpoint)."""
    _, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    delivery = endpoint_test(endpoint=WebhookEndpoint.objects.get(id=created["id"]))
    found = WebhookEndpoint.objects.get(id=created["id"])  # as the view found it
    endpoint_delete(endpoint=WebhookEndpoint.objects.get(id=created["id"]))
    calls = {
        "patch": lambda: endpoint_update(endpoint=found, description="x"),
        "delete": lambda: endpoint_delete(endpoint=found),
        "rotate": lambda: endpoint_secret_rotate(endpoint=found),
        "test": lambda: endpoint_test(endpoint=found),
        "redeliver": lambda: delivery_redeliver(delivery=delivery),
    }
    with pytest.raises(NotFoundError, match="No such webhook endpoint."):
        calls[operation]()
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_deleted_while_an_event_is_recorded_for_it_goes_with_its_delivery(
    tenant_client,
):
    """An event recorded for an endpoint in a transaction still open (an upload finishing)
    holds its deletion until it commits; the delivery is then deleted with the endpoint.
    (The delete failed on its foreign key, or the upload's commit did.)"""
    tenant, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    deleted = threading.Event()
    with transaction.atomic():
        event_record(tenant_id=tenant.id, type="upload.failed", data=lambda: {"id": "x"})
        deleting = threading.Thread(
            target=lambda: (
                endpoint_delete(endpoint=WebhookEndpoint.objects.get(id=created["id"])),
                deleted.set(),
                connection.close(),
            )
        )
        deleting.start()
        assert not deleted.wait(0.5)  # it waits for this transaction
    deleting.join(10)
    assert deleted.is_set()
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_another_tenants_endpoint_is_not_found_for_every_operation(tenant_client):
    """Every operation on another tenant's endpoint is 404, and its list is empty."""
    _, owner = tenant_client("Acme")
    _, other = tenant_client("Globex")
    endpoint_id = register(owner, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    delivery_id = owner.post(f"/api/v1/webhooks/{endpoint_id}/test/").json()["id"]
    base = f"/api/v1/webhooks/{endpoint_id}/"
    answers = [
        other.get(base),
        other.patch(base, {"enabled": False}, format="json"),
        other.delete(base),
        other.post(base + "rotate-secret/"),
        other.post(base + "test/"),
        other.get(base + "deliveries/"),
        other.post(base + f"deliveries/{delivery_id}/redeliver/"),
    ]
    for answer in answers:
        assert_problem(answer, 404, "Not found", "No such webhook endpoint.", "not_found")
    assert other.get("/api/v1/webhooks/").json()["count"] == 0
    assert WebhookEndpoint.objects.get(id=endpoint_id).enabled


@pytest.mark.parametrize(
    ("body", "detail", "code", "extra"),
    [
        (
            {"url": "ftp://example.com/hook", "events": ["upload.failed"]},
            "Only http and https URLs can receive webhooks.",
            "invalid_url",
            {},
        ),
        (
            {"url": "http:///hook", "events": ["upload.failed"]},
            "The URL has no host.",
            "invalid_url",
            {},
        ),
        (
            {"url": "http://127.0.0.1:9/hook", "events": ["upload.nope"]},
            'events: 0: "upload.nope" is not a valid choice.',
            "invalid",
            {"errors": {"events": {"0": ['"upload.nope" is not a valid choice.']}}},
        ),
        (
            {"url": "http://127.0.0.1:9/hook", "events": []},
            "events: This list may not be empty.",
            "invalid",
            {"errors": {"events": ["This list may not be empty."]}},
        ),
        (
            {"url": "http://127.0.0.1:9/hook", "events": ["upload.failed"], "secret": "x"},
            "secret: Unknown field.",
            "invalid",
            {"errors": {"secret": ["Unknown field."]}},
        ),
        (
            {"url": "http://127.0.0.1:9/a\r\nX-Injected: 1", "events": ["upload.failed"]},
            "The URL holds '\\r' at character 21: spaces and control characters must be "
            "percent-encoded.",
            "invalid_url",
            {},
        ),
        (
            {"url": "http://127.0.0.1:9/a\tb", "events": ["upload.failed"]},
            "The URL holds '\\t' at character 21: spaces and control characters must be "
            "percent-encoded.",
            "invalid_url",
            {},
        ),
        (
            {"url": "http://127.0.0.1:9/a b", "events": ["upload.failed"]},
            "The URL holds ' ' at character 21: spaces and control characters must be "
            "percent-encoded.",
            "invalid_url",
            {},
        ),
        (
            {"url": "http://127.0.0.1:9/del\x7f", "events": ["upload.failed"]},
            "The URL holds '\\x7f' at character 23: spaces and control characters must be "
            "percent-encoded.",
            "invalid_url",
            {},
        ),
        (
            {"url": "http://" + "a" * 64 + "\u00e9.example/hook", "events": ["upload.failed"]},
            f"The host '{'a' * 64}\u00e9.example' is not a valid domain name: Label too long.",
            "invalid_url",
            {},
        ),
    ],
    ids=[
        "scheme",
        "no-host",
        "unknown-event",
        "no-events",
        "unknown-field",
        "line-break",
        "tab",
        "space",
        "delete",
        "idn-label-too-long",
    ],
)
def test_an_invalid_endpoint_is_refused_with_a_problem(tenant_client, body, detail, code, extra):
    """A bad scheme, no host, an unknown event type, no events, an unknown field: 400. So
    are whitespace and control characters, which the URL parser drops without a word (the
    request would go elsewhere than the URL stored), and a host no IDNA name can be."""
    _, client = tenant_client()
    answer = client.post("/api/v1/webhooks/", body, format="json")
    title = "Webhook URL not allowed" if code == "invalid_url" else "Bad request"
    assert_problem(answer, 400, title, detail, code, **extra)
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1"),
        ("http://localhost/hook", None),
        ("https://10.1.2.3/hook", "10.1.2.3"),
        ("http://192.168.0.10/hook", "192.168.0.10"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]/hook", "::1"),
        ("http://[::127.0.0.1]/hook", "::7f00:1"),  # IPv4-compatible
        ("http://[64:ff9b::7f00:1]/hook", "64:ff9b::7f00:1"),  # NAT64 to 127.0.0.1
        ("http://[64:ff9b::a01:203]/hook", "64:ff9b::a01:203"),  # NAT64 to 10.1.2.3
        ("http://[2002:7f00:1::1]/hook", "2002:7f00:1::1"),  # 6to4 of 127.0.0.1
        ("http://[fec0::1]/hook", "fec0::1"),  # site-local
    ],
)
def test_a_private_address_is_refused_unless_the_operator_allows_it(
    tenant_client, settings, url, address
):
    """With WEBHOOK_ALLOW_PRIVATE_URLS off, loopback, private and link-local hosts are 400,
    on create and on update."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    _, client = tenant_client()
    answer = client.post("/api/v1/webhooks/", {"url": url, "events": ["upload.failed"]}, "json")
    host = url.split("/")[2].rsplit(":", 1)[0] if "[" not in url else url[8:].split("]")[0]
    if address is None:  # localhost: whichever loopback address it resolves to first
        address = json.loads(answer.content)["detail"].split(" resolves to ")[1].split(",")[0]
        host = "localhost"
    detail = (
        f"The host {host!r} resolves to {address}, a loopback, link-local or private "
        "address: not allowed."
    )
    assert_problem(answer, 400, "Webhook URL not allowed", detail, "url_not_allowed")
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    endpoint_id = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    answer = client.patch(f"/api/v1/webhooks/{endpoint_id}/", {"url": url}, format="json")
    assert_problem(answer, 400, "Webhook URL not allowed", detail, "url_not_allowed")


def test_a_public_address_an_ipv6_one_carries_is_allowed_and_port_0_is_not(tenant_client, settings):
    """NAT64 and 6to4 addresses of a public IPv4 address are public; port 0 is refused."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    _, client = tenant_client()
    for url in ("http://[64:ff9b::101:101]/hook", "http://[2002:101:101::1]/hook"):
        answer = client.post("/api/v1/webhooks/", {"url": url, "events": ["upload.failed"]}, "json")
        assert answer.status_code == 201, answer.content
    answer = client.post(
        "/api/v1/webhooks/", {"url": "http://1.1.1.1:0/hook", "events": ["upload.failed"]}, "json"
    )
    assert_problem(
        answer, 400, "Webhook URL not allowed", "Port 0 cannot receive webhooks.", "invalid_url"
    )


def test_an_endpoint_can_be_registered_disabled(tenant_client):
    """`"enabled": false` at creation (it was refused as an unknown field): the endpoint is
    kept disabled, as one a PATCH disabled (events skip it)."""
    _, client = tenant_client()
    answer = client.post(
        "/api/v1/webhooks/",
        {"url": "http://127.0.0.1:9/hook", "events": ["upload.failed"], "enabled": False},
        format="json",
    )
    assert (answer.status_code, answer.json()["enabled"]) == (201, False), answer.content
    assert WebhookEndpoint.objects.get(id=answer.json()["id"]).enabled is False


def test_an_event_type_named_again_counts_once(tenant_client):
    """Six names of one type and one of another are two types: registered and changed (a
    repeat was counted against the limit of one name per type, a 400)."""
    _, client = tenant_client()
    events = ["upload.failed"] * 6 + ["upload.completed"]
    answer = client.post(
        "/api/v1/webhooks/", {"url": "http://127.0.0.1:9/hook", "events": events}, format="json"
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["events"] == ["upload.completed", "upload.failed"]
    url = f"/api/v1/webhooks/{answer.json()['id']}/"
    changed = client.patch(url, {"events": ["pending.expired"] * 9}, format="json")
    assert (changed.status_code, changed.json()["events"]) == (200, ["pending.expired"])
    assert WebhookEndpoint.objects.get(id=answer.json()["id"]).events == ["pending.expired"]


def test_a_change_keeps_what_another_request_changed_since_the_endpoint_was_read(tenant_client):
    """An update made from the endpoint as read before a secret rotation and another
    update keeps both: it changes only its own fields, on the row as it is now."""
    _, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    read_before = WebhookEndpoint.objects.get(id=created["id"])
    rotated = endpoint_secret_rotate(endpoint=WebhookEndpoint.objects.get(id=created["id"]))
    endpoint_update(endpoint=WebhookEndpoint.objects.get(id=created["id"]), events=ALL_EVENTS)
    endpoint_update(endpoint=read_before, description="changed")
    now = WebhookEndpoint.objects.get(id=created["id"])
    assert (now.secret, now.previous_secrets[0]["secret"]) == (rotated.secret, created["secret"])
    assert (now.events, now.description) == (sorted(ALL_EVENTS), "changed")


@pytest.mark.parametrize(
    "spelling",
    [
        lambda id_: id_.upper(),
        lambda id_: id_.replace("-", ""),
        lambda id_: "{" + id_ + "}",
        lambda id_: "urn:uuid:" + id_,
        lambda id_: id_.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),  # Arabic-Indic
        lambda id_: id_.translate(str.maketrans("0123456789", "０１２３４５６７８９")),  # fullwidth
    ],
    ids=["upper", "no-hyphens", "braces", "urn", "arabic-indic-digits", "fullwidth-digits"],
)
def test_an_endpoint_answers_only_to_its_id_as_written(tenant_client, spelling):
    """Other spellings of an endpoint's id (which Python's UUID reads) are 404 for every
    operation, and change nothing."""
    _, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    base = f"/api/v1/webhooks/{quote(spelling(created['id']))}/"
    answers = [
        client.get(base),
        client.patch(base, {"enabled": False}, format="json"),
        client.post(base + "rotate-secret/"),
        client.delete(base),
    ]
    assert [answer.status_code for answer in answers] == [404] * 4
    endpoint = WebhookEndpoint.objects.get(id=created["id"])
    assert (endpoint.enabled, endpoint.secret) == (True, created["secret"])


def test_a_test_event_is_logged_as_a_pending_delivery_and_can_be_redelivered(tenant_client):
    """POST test/ answers 202 with a pending delivery, which the log lists; redeliver adds a
    new delivery of the same event."""
    _, client = tenant_client()
    endpoint_id = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    sent = client.post(f"/api/v1/webhooks/{endpoint_id}/test/")
    assert sent.status_code == 202, sent.content
    delivery = sent.json()
    assert delivery["event_id"].startswith("msg_")
    assert delivery == {
        "id": delivery["id"],
        "event_id": delivery["event_id"],
        "event_type": "webhook.test",
        "state": "pending",
        "attempt": 0,
        "status_code": None,
        "latency_ms": None,
        "error": "",
        "next_attempt_at": delivery["next_attempt_at"],
        "delivered_at": None,
        "created_at": delivery["created_at"],
        "attempts": [],
    }
    log = client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries/").json()
    assert (log["count"], log["results"]) == (1, [delivery])
    again = client.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/{delivery['id']}/redeliver/")
    assert again.status_code == 202, again.content
    assert again.json()["event_id"] == delivery["event_id"]
    assert again.json()["id"] != delivery["id"]
    log = client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries/").json()
    assert [d["id"] for d in log["results"]] == [again.json()["id"], delivery["id"]]
    missing = client.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/999999/redeliver/")
    assert_problem(missing, 404, "Not found", "No such delivery.", "not_found")


def test_events_go_only_to_enabled_endpoints_that_take_their_type(tenant_client):
    """An event is recorded for each enabled endpoint of its tenant subscribed to its type,
    and for none when there is none (nothing is even built)."""
    from apps.webhooks.services import event_record

    tenant, client = tenant_client()
    other, other_client = tenant_client("Globex")
    takes = register(client, "http://127.0.0.1:9/a", ["upload.failed"])["id"]
    register(client, "http://127.0.0.1:9/b", ["upload.completed"])
    off = register(client, "http://127.0.0.1:9/c", ["upload.failed"])["id"]
    client.patch(f"/api/v1/webhooks/{off}/", {"enabled": False}, format="json")
    register(other_client, "http://127.0.0.1:9/d", ["upload.failed"])
    event = event_record(tenant_id=tenant.id, type="upload.failed", data=lambda: {"id": "u1"})
    assert [str(d.endpoint_id) for d in event.deliveries.all()] == [takes]

    def never() -> dict:
        raise AssertionError("built for no endpoint")

    assert event_record(tenant_id=tenant.id, type="pending.expired", data=never) is None


def test_a_body_too_large_carries_the_smaller_form_then_the_essentials(tenant_client, settings):
    """Over WEBHOOK_MAX_PAYLOAD_BYTES, `smaller()` is sent instead; failing that, the
    resource's essential fields and `truncated`."""
    from apps.webhooks.services import event_record

    tenant, client = tenant_client()
    register(client, "http://127.0.0.1:9/a", ["records.batch_merged"])
    settings.WEBHOOK_MAX_PAYLOAD_BYTES = 2000
    big = {"id": 7, "url": "u", "state": "merged", "rejects": ["x" * 100] * 50}
    small = {"id": 7, "url": "u", "state": "merged"}
    sent = event_record(
        tenant_id=tenant.id, type="records.batch_merged", data=lambda: big, smaller=lambda: small
    )
    assert json.loads(sent.payload)["data"] == small
    sent = event_record(tenant_id=tenant.id, type="records.batch_merged", data=lambda: big)
    assert json.loads(sent.payload)["data"] == {**small, "truncated": True}
    assert WebhookDelivery.objects.count() == 2


def test_the_metrics_count_deliveries_by_state_and_failing_endpoints(tenant_client, client):
    """/metrics shows webhook_deliveries{state} and webhook_endpoints_failing."""
    _, api = tenant_client()
    endpoint_id = register(api, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    api.post(f"/api/v1/webhooks/{endpoint_id}/test/")
    text = client.get("/metrics").content.decode()
    assert 'webhook_deliveries{state="pending"} 1.0' in text
    assert 'webhook_deliveries{state="delivered"} 0.0' in text
    assert "webhook_endpoints_failing 0.0" in text


def test_staff_read_endpoints_and_deliveries_in_the_admin_never_the_secret(tenant_client):
    """The admin lists and shows endpoints and deliveries, read-only, without the secret."""
    from tests.factories import signed_in, staff_user

    _, client = tenant_client()
    created = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])
    delivery = client.post(f"/api/v1/webhooks/{created['id']}/test/").json()
    staff = signed_in(staff_user("reader"))
    pages = [
        staff.get("/admin/webhooks/webhookendpoint/"),
        staff.get(f"/admin/webhooks/webhookendpoint/{created['id']}/change/"),
        staff.get("/admin/webhooks/webhookdelivery/"),
        staff.get(f"/admin/webhooks/webhookdelivery/{delivery['id']}/change/"),
    ]
    assert [page.status_code for page in pages] == [200, 200, 200, 200]
    assert all(created["secret"] not in page.content.decode() for page in pages)
    assert "http://127.0.0.1:9/hook" in pages[1].content.decode()
    assert staff.get("/admin/webhooks/webhookendpoint/add/").status_code == 403


def test_a_tenant_registers_at_most_its_limit_of_endpoints(tenant_client, settings):
    """Past WEBHOOK_MAX_ENDPOINTS a registration is 409 `too_many_endpoints` (every event
    is a delivery to each, on the workers all tenants share); deleting one makes room.
    Another tenant has its own count."""
    settings.WEBHOOK_MAX_ENDPOINTS = 2
    _, client = tenant_client()
    first = register(client, "http://127.0.0.1:9/a", ["upload.failed"])
    register(client, "http://127.0.0.1:9/b", ["upload.failed"], enabled=False)
    answer = client.post(
        "/api/v1/webhooks/", {"url": "http://127.0.0.1:9/c", "events": ["upload.failed"]}, "json"
    )
    detail = (
        "The tenant has 2 webhook endpoints, the most it may have: delete one first, or send "
        "more event types to one."
    )
    assert_problem(answer, 409, "Conflict", detail, "too_many_endpoints")
    assert client.delete(f"/api/v1/webhooks/{first['id']}/").status_code == 204
    register(client, "http://127.0.0.1:9/c", ["upload.failed"])
    _, other = tenant_client("Globex")
    register(other, "http://127.0.0.1:9/a", ["upload.failed"])


@pytest.mark.parametrize("value", ["yes", "true", "off", 1, 0, "1", None, [], {}])
def test_enabled_is_a_json_boolean_and_nothing_else(tenant_client, value):
    """`enabled` takes `true` or `false` only: "yes", "off", 1 and the like are a 400 that
    names the field, at creation and in a PATCH (they were read as booleans)."""
    _, client = tenant_client()
    answer = client.post(
        "/api/v1/webhooks/",
        {"url": "http://127.0.0.1:9/hook", "events": ["upload.failed"], "enabled": value},
        format="json",
    )
    assert answer.status_code == 400, answer.content
    assert "enabled" in answer.json()["errors"]
    assert not WebhookEndpoint.objects.exists()
    created = client.post(
        "/api/v1/webhooks/",
        {"url": "http://127.0.0.1:9/hook", "events": ["upload.failed"], "enabled": False},
        format="json",
    ).json()
    patched = client.patch(f"/api/v1/webhooks/{created['id']}/", {"enabled": value}, "json")
    assert patched.status_code == 400, patched.content
    assert WebhookEndpoint.objects.get(id=created["id"]).enabled is False


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_deleted_while_a_worker_logs_an_attempt_is_deleted_with_it(tenant_client):
    """A worker takes a delivery (its row locked) and logs the attempt under way while the
    endpoint is deleted: the delete waits for it and takes the attempt along (204), not a
    foreign key violation at commit (500) that left the endpoint there."""
    import psycopg

    from tests.factories import database_url_of_tests

    _, client = tenant_client()
    endpoint_id = register(client, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    delivery = client.post(f"/api/v1/webhooks/{endpoint_id}/test/").json()
    holding = threading.Event()

    def worker_takes() -> None:
        with psycopg.connect(database_url_of_tests()) as conn:
            conn.execute(
                "SELECT 1 FROM webhook_deliveries WHERE id = %s FOR UPDATE", [delivery["id"]]
            )
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, number, error, created_at) "
                "VALUES (%s, 1, 'under way', now())",
                [delivery["id"]],
            )
            holding.set()
            time.sleep(1)
        # committed on leaving the block

    taker = threading.Thread(target=worker_takes)
    taker.start()
    assert holding.wait(10)
    deleted = client.delete(f"/api/v1/webhooks/{endpoint_id}/")
    taker.join()
    assert deleted.status_code == 204, deleted.content
    assert not WebhookEndpoint.objects.filter(id=endpoint_id).exists()
    assert not WebhookDelivery.objects.filter(id=delivery["id"]).exists()


@pytest.mark.parametrize("method", ["post", "patch"])
def test_a_json_body_past_the_request_limit_is_413_naming_it(tenant_client, settings, method):
    """A webhook's JSON over DATA_UPLOAD_MAX_MEMORY_SIZE (a 11 MB description): 413 with
    the limit, not a 400 "refused"."""
    _, client = tenant_client()
    path = "/api/v1/webhooks/"
    if method == "patch":
        path += register(client, "http://127.0.0.1:9/hook", ["upload.failed"])["id"] + "/"
    body = {"url": "http://127.0.0.1:9/hook", "events": ["upload.failed"]}
    body["description"] = "x" * 11_000_000
    response = getattr(client, method)(path, json.dumps(body), content_type="application/json")
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert_problem(
        response,
        413,
        "Payload too large",
        f"The request body is over the {limit}-byte limit of this request.",
        "payload_too_large",
    )
    assert WebhookEndpoint.objects.count() == (1 if method == "patch" else 0)


def test_the_purge_takes_old_settled_events_with_their_log_and_keeps_the_rest(
    tenant_client, settings
):
    """Past WEBHOOK_RETENTION_DAYS, an event whose deliveries are all delivered or failed
    goes with its deliveries and attempts; an old one still pending and a recent one stay.
    Beat runs it hourly (nothing else removed them)."""
    from datetime import timedelta

    from apps.webhooks.models import WebhookAttempt, WebhookEvent
    from apps.webhooks.tasks import webhook_purge_task

    assert settings.CELERY_BEAT_SCHEDULE["webhook-purge"]["task"] == webhook_purge_task.name
    settings.WEBHOOK_RETENTION_DAYS = 30
    _, client = tenant_client()
    endpoint = WebhookEndpoint.objects.get(
        id=register(client, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    )
    made = {}
    for name, state, age in (
        ("old-delivered", "delivered", 31),
        ("old-failed", "failed", 40),
        ("old-pending", "pending", 31),
        ("recent", "delivered", 29),
    ):
        delivery = endpoint_test(endpoint=endpoint)
        WebhookAttempt.objects.create(delivery=delivery, number=1, error="")
        WebhookDelivery.objects.filter(id=delivery.id).update(state=state)
        when = timezone.now() - timedelta(days=age)
        WebhookEvent.objects.filter(id=delivery.event_id).update(created_at=when)
        made[name] = delivery
    assert webhook_purge_task() == 2
    kept = set(WebhookDelivery.objects.values_list("id", flat=True))
    assert kept == {made["old-pending"].id, made["recent"].id}
    assert set(WebhookAttempt.objects.values_list("delivery_id", flat=True)) == kept
    assert WebhookEvent.objects.count() == 2
    settings.WEBHOOK_RETENTION_DAYS = 0  # kept for ever
    WebhookDelivery.objects.update(state="delivered")
    assert webhook_purge_task() == 0


@pytest.mark.django_db(transaction=True)
def test_the_purge_leaves_an_event_a_redeliver_is_adding_to(tenant_client, settings):
    """A redeliver of an old event holds it (its new delivery not committed yet) while the
    purge runs: the purge leaves it, and the new delivery keeps its event. (The purge took
    it, and failed at commit on the new delivery's foreign key.)"""
    from datetime import timedelta

    import psycopg

    from apps.webhooks.models import WebhookEvent
    from apps.webhooks.services import webhook_purge
    from tests.factories import database_url_of_tests

    settings.WEBHOOK_RETENTION_DAYS = 30
    _, client = tenant_client()
    endpoint = WebhookEndpoint.objects.get(
        id=register(client, "http://127.0.0.1:9/hook", ["upload.failed"])["id"]
    )
    old = endpoint_test(endpoint=endpoint)
    WebhookDelivery.objects.filter(id=old.id).update(state="delivered")
    WebhookEvent.objects.filter(id=old.event_id).update(
        created_at=timezone.now() - timedelta(days=31)
    )
    holding = threading.Event()

    def redeliver_commits_late() -> None:
        with psycopg.connect(database_url_of_tests()) as conn:
            conn.execute("SELECT 1 FROM webhook_events WHERE id = %s FOR KEY SHARE", [old.event_id])
            conn.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, state, attempts, "
                "next_attempt_at, last_error, created_at, updated_at) "
                "VALUES (%s, %s, 'pending', 0, now(), '', now(), now())",
                [endpoint.id, old.event_id],
            )
            holding.set()
            time.sleep(1)

    redeliver = threading.Thread(target=redeliver_commits_late)
    redeliver.start()
    assert holding.wait(10)
    try:
        assert webhook_purge() == 0
    finally:
        redeliver.join()
    assert WebhookEvent.objects.filter(id=old.event_id).exists()
    assert WebhookDelivery.objects.filter(event_id=old.event_id, state="pending").count() == 1
