"""`Idempotency-Key` on the webhook API's POSTs, as on uploads (SPEC 5): registering an
endpoint, rotating its secret, sending a test event and redelivering are each done once per
key; the same key and body replay the first answer (`Idempotent-Replayed: true`), another
body is 422, and nothing is made twice."""

from __future__ import annotations

import pytest

from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.webhooks.conftest import register

pytestmark = pytest.mark.django_db

HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["upload.failed"]}


def post(client, path: str, body: dict | None = None, *, key: str):
    return client.post(path, body, format="json", headers={"Idempotency-Key": key})


def test_a_registration_sent_again_with_its_key_makes_one_endpoint(tenant_client):
    """The retry gets the first answer, the secret included (the client never saw it)."""
    tenant, client = tenant_client()
    first = post(client, "/api/v1/webhooks/", HOOK, key="hook-1")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    again = post(client, "/api/v1/webhooks/", {**HOOK, "events": ["upload.failed"]}, key="hook-1")
    assert again.status_code == 201, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.json()["secret"].startswith("whsec_")
    assert WebhookEndpoint.objects.filter(tenant=tenant).count() == 1


def test_the_same_key_for_another_registration_is_422_and_makes_nothing(tenant_client):
    tenant, client = tenant_client()
    assert post(client, "/api/v1/webhooks/", HOOK, key="hook-2").status_code == 201
    other = post(client, "/api/v1/webhooks/", {**HOOK, "description": "other"}, key="hook-2")
    assert other.status_code == 422, other.content
    assert other.json()["code"] == "idempotency_mismatch"
    assert WebhookEndpoint.objects.filter(tenant=tenant).count() == 1


def test_a_refused_registration_frees_its_key(tenant_client):
    """A 400 stores nothing under the key: the corrected request goes through with it."""
    tenant, client = tenant_client()
    bad = post(client, "/api/v1/webhooks/", {**HOOK, "events": ["nope"]}, key="hook-3")
    assert bad.status_code == 400, bad.content
    good = post(client, "/api/v1/webhooks/", HOOK, key="hook-3")
    assert good.status_code == 201, good.content
    assert "Idempotent-Replayed" not in good
    assert WebhookEndpoint.objects.filter(tenant=tenant).count() == 1


def test_a_rotation_sent_again_with_its_key_rotates_once(tenant_client):
    _, client = tenant_client()
    created = register(client, **HOOK)
    path = f"/api/v1/webhooks/{created['id']}/rotate-secret/"
    first = post(client, path, key="rotate-1")
    assert first.status_code == 200, first.content
    again = post(client, path, key="rotate-1")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["secret"] == first.json()["secret"] != created["secret"]
    endpoint = WebhookEndpoint.objects.get(id=created["id"])
    assert [old["secret"] for old in endpoint.previous_secrets] == [created["secret"]]


def test_a_test_event_and_a_redelivery_sent_again_with_their_keys_are_sent_once(tenant_client):
    _, client = tenant_client()
    created = register(client, **HOOK)
    test = post(client, f"/api/v1/webhooks/{created['id']}/test/", key="test-1")
    assert test.status_code == 202, test.content
    assert post(client, f"/api/v1/webhooks/{created['id']}/test/", key="test-1").json() == (
        test.json()
    )
    path = f"/api/v1/webhooks/{created['id']}/deliveries/{test.json()['id']}/redeliver/"
    redelivered = post(client, path, key="redeliver-1")
    assert redelivered.status_code == 202, redelivered.content
    again = post(client, path, key="redeliver-1")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == redelivered.json()
    assert WebhookDelivery.objects.filter(endpoint_id=created["id"]).count() == 2
