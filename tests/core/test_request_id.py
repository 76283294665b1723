"""`X-Request-Id` (SPEC 13): on every answer, a client's own kept when sane, else a new one;
in problem+json bodies and on the request's log lines; and pagination's `Link` header."""

from __future__ import annotations

import logging
import uuid

import pytest
from rest_framework.test import APIClient

from apps.tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("3f2b8c1e-trace.42:7", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("with space", False),
        ("nul\x00byte", False),
        ("é", False),
        ("", False),
    ],
)
def test_every_answer_has_a_request_id_the_clients_when_sane(client, given, kept):
    """A 200 without a key (the contract), a 401, a 404 on no route: all answer one."""
    for path in ("/api/v1/contract/", "/api/v1/ingest/uploads/", "/api/v1/nowhere/"):
        response = client.get(path, HTTP_X_REQUEST_ID=given)
        answered = response["X-Request-Id"]
        assert answered == given if kept else _is_uuid(answered), (path, answered)
    first = client.get("/api/v1/contract/")["X-Request-Id"]
    second = client.get("/api/v1/contract/")["X-Request-Id"]
    assert _is_uuid(first)
    assert first != second


def test_problem_bodies_carry_the_request_id(client):
    tenant, issued = tenant_create(name="ids")
    keyed = APIClient()
    keyed.credentials(HTTP_X_API_KEY=issued.raw)
    answers = [
        client.get("/api/v1/nowhere/", HTTP_X_REQUEST_ID="r-404"),  # Django's 404
        client.get("/api/v1/ingest/uploads/", HTTP_X_REQUEST_ID="r-401"),  # DRF's 401
        keyed.get("/api/v1/ingest/uploads/", {"limit": "x"}, HTTP_X_REQUEST_ID="r-400"),
        keyed.get(f"/api/v1/ingest/uploads/{uuid.uuid4()}/", HTTP_X_REQUEST_ID="r-404b"),
        keyed.put(
            "/api/v1/ingest/rules/products/",
            b"[",
            content_type="application/json",
            HTTP_X_REQUEST_ID="r-parse",
        ),
    ]
    for response, expected in zip(
        answers, ["r-404", "r-401", "r-400", "r-404b", "r-parse"], strict=True
    ):
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["request_id"] == expected == response["X-Request-Id"]


def test_the_requests_log_lines_carry_its_id(client, caplog):
    from apps.core.logs import bound_ids

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(
                (record.name, bound_ids().get("request_id"), getattr(record, "request", None))
            )

    handler = Keep()
    logging.getLogger().addHandler(handler)
    try:
        client.get("/api/v1/ingest/uploads/", HTTP_X_REQUEST_ID="r-logged")
    finally:
        logging.getLogger().removeHandler(handler)
    access = [rid for name, rid, _ in seen if name == "apps.access"]
    assert access == ["r-logged"]
    # Django's own 4xx line comes after the middleware: its record names the request
    late = [request for name, _, request in seen if name == "django.request"]
    assert [r.request_id for r in late] == ["r-logged"]


def test_pages_link_to_their_neighbours(tenant, ndjson, load):
    from apps.ingestions.engine.testing import customer_row, uid
    from apps.tenants.services import api_key_rotate

    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_rotate(tenant=tenant, revoke_existing=False).raw)
    for n in range(3):
        load(tenant, ndjson(f"customers_{n}.ndjson", [customer_row(customer_id=uid(f"p{n}"))]))
    first = client.get("/api/v1/ingest/uploads/", {"limit": 1})
    body = first.json()
    assert first["Link"] == f'<{body["next"]}>; rel="next"'
    middle = client.get(body["next"])
    assert middle["Link"] == (
        f'<{middle.json()["next"]}>; rel="next", <{middle.json()["previous"]}>; rel="prev"'
    )
    whole = client.get("/api/v1/ingest/uploads/")
    assert "Link" not in whole
