"""The dashboard's webhooks card through Django's test client, on the real database: a
tenant's endpoints (failing ones marked) and latest deliveries, the redeliver button, and
that no tenant ever sees or redelivers another's."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import endpoint_create, endpoint_test

PASSWORD = "a-staff-password-1"  # noqa: S105 - a test user's


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True


class _Rows(HTMLParser):
    """Each webhook table's rows: `data-endpoint` or `data-delivery` id -> cell texts."""

    def __init__(self, html: str):
        super().__init__()
        self.endpoints: dict[str, list[str]] = {}
        self.deliveries: dict[str, list[str]] = {}
        self._row: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-endpoint" in attrs:
            self._row = self.endpoints.setdefault(attrs["data-endpoint"], [])
        elif tag == "tr" and "data-delivery" in attrs:
            self._row = self.deliveries.setdefault(attrs["data-delivery"], [])
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row:
            self._row[-1] += data.strip()


def _signed_in(key: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    assert client.get("/dashboard/login/").status_code == 200
    token = client.cookies["csrftoken"].value
    answer = client.post("/dashboard/login/", {"api_key": key, "csrfmiddlewaretoken": token})
    assert answer.status_code == 302
    return client


def _redeliver(client: Client, delivery_id: int):
    token = client.cookies["csrftoken"].value
    return client.post(
        f"/dashboard/webhooks/deliveries/{delivery_id}/redeliver/", {"csrfmiddlewaretoken": token}
    )


def _endpoint_with_a_delivery(tenant, url: str) -> tuple[WebhookEndpoint, WebhookDelivery]:
    endpoint = endpoint_create(tenant=tenant, url=url, events=["upload.failed"])
    return endpoint, endpoint_test(endpoint=endpoint)


def test_a_tenant_sees_its_endpoints_failing_ones_marked_and_its_deliveries(acme, globex):
    """The card lists the tenant's endpoints (a failing one says so) and its deliveries
    with their attempts, status and error; nothing of another tenant's."""
    endpoint, delivery = _endpoint_with_a_delivery(acme[0], "http://127.0.0.1:9/acme")
    WebhookEndpoint.objects.filter(id=endpoint.id).update(failing_since=timezone.now())
    WebhookDelivery.objects.filter(id=delivery.id).update(
        state="failed", attempts=11, last_status_code=500, last_error="HTTP 500"
    )
    other, other_delivery = _endpoint_with_a_delivery(globex[0], "http://127.0.0.1:9/globex")

    html = _signed_in(acme[1]).get("/dashboard/").content.decode()
    rows = _Rows(html)
    assert list(rows.endpoints) == [str(endpoint.id)]
    assert rows.endpoints[str(endpoint.id)][:3] == [
        "http://127.0.0.1:9/acme",
        "upload.failed",
        "failing",
    ]
    assert list(rows.deliveries) == [str(delivery.id)]
    assert rows.deliveries[str(delivery.id)][1:8] == [
        "webhook.test",
        "http://127.0.0.1:9/acme",
        "failed",
        "11",
        "500",
        "",
        "HTTP 500",
    ]
    assert "globex" not in html
    assert f"/dashboard/webhooks/deliveries/{delivery.id}/redeliver/" in html
    assert str(other.id) not in html
    assert f"/deliveries/{other_delivery.id}/" not in html


def test_the_redeliver_button_sends_the_event_again_and_returns_to_the_card(acme):
    """POST redeliver (with the form's CSRF token) adds a pending delivery of the same
    event and redirects back to the webhooks card."""
    endpoint, delivery = _endpoint_with_a_delivery(acme[0], "http://127.0.0.1:9/acme")
    client = _signed_in(acme[1])
    client.get("/dashboard/")
    answer = _redeliver(client, delivery.id)
    assert (answer.status_code, answer["Location"]) == (302, "/dashboard/#webhooks")
    again = WebhookDelivery.objects.exclude(id=delivery.id).get(endpoint=endpoint)
    assert (again.event_id, again.state, again.attempts) == (delivery.event_id, "pending", 0)


def test_a_tenant_cannot_redeliver_another_tenants_delivery_nor_without_the_token(acme, globex):
    """Another tenant's delivery is 404; a POST without the CSRF token is refused (403)."""
    _, delivery = _endpoint_with_a_delivery(globex[0], "http://127.0.0.1:9/globex")
    client = _signed_in(acme[1])
    assert _redeliver(client, delivery.id).status_code == 404
    bare = client.post(f"/dashboard/webhooks/deliveries/{delivery.id}/redeliver/")
    assert bare.status_code == 403
    assert WebhookDelivery.objects.count() == 1


def test_staff_choose_a_tenant_to_see_its_webhooks_and_can_redeliver(acme):
    """Staff looking at every tenant are asked to choose one; with `?tenant=` they see its
    card, and a redelivery brings them back to it."""
    _, delivery = _endpoint_with_a_delivery(acme[0], "http://127.0.0.1:9/acme")
    get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    client = Client()
    assert client.login(username="ops", password=PASSWORD)
    everyone = client.get("/dashboard/").content.decode()
    assert "Webhook endpoints are each tenant's own" in everyone
    one = client.get(f"/dashboard/?tenant={acme[0].id}").content.decode()
    assert list(_Rows(one).deliveries) == [str(delivery.id)]
    answer = client.post(f"/dashboard/webhooks/deliveries/{delivery.id}/redeliver/")
    assert answer.status_code == 302
    assert re.fullmatch(rf"/dashboard/\?tenant={acme[0].id}#webhooks", answer["Location"])


def test_a_right_to_left_override_in_a_url_or_a_description_is_shown_as_its_escape(acme):
    """U+202E turns the text after it around on screen ("x\\u202egpj" reads "xjpg"), and
    U+2028 breaks the line: the card writes them as escapes, as it does a reject's."""
    endpoint = endpoint_create(
        tenant=acme[0],
        url="http://127.0.0.1:9/ok/x\u202egpj",
        events=["upload.failed"],
        description="\u202ecsed\u2028next",
    )
    endpoint_test(endpoint=endpoint)
    html = _signed_in(acme[1]).get("/dashboard/").content.decode()
    assert "\u202e" not in html
    assert "\u2028" not in html
    rows = _Rows(html)
    assert rows.endpoints[str(endpoint.id)][0] == (
        "http://127.0.0.1:9/ok/x\\u202egpj\\u202ecsed\\u2028next"
    )
    [delivery] = rows.deliveries.values()
    assert delivery[2] == "http://127.0.0.1:9/ok/x\\u202egpj"
