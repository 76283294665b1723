"""The fuzz layer: requests generated from the OpenAPI schema (schemathesis) for every
operation, valid and invalid alike, sent to a real gunicorn (what clients talk to) with a
tenant's valid key. Whatever is sent, the answer is never a server error, and it is what
the schema says: a documented status, content type, headers and body; a method the
operation does not have is a 405 with Allow.

Bounded and repeatable: at most 50 examples per operation and phase, derandomized, from a
fixed seed (about 1,400 requests, 30 s)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from apps.tenants.services import tenant_create
from tests.web_server import running_web_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Strings that have broken servers like this one, mixed into every generated string: a NUL
# (PostgreSQL text refuses it), a digit str.isdigit() takes and int() does not, a control
# character, a huge number. Latin-1 only: they go into headers too.
EDGES = ["\x00", "a\x00b", "²", "a\x01b", "9" * 30]
# Each answer on its own; missing_required_header would see the key this test always adds
# (and tus answers a missing Tus-Resumable with the 412 its protocol prescribes).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    unsupported_method,
    allow_header_conformance,
]
CONFIG = {
    "seed": 20260101,
    "dictionaries": {"edges": {"values": EDGES}},
    "generation": {
        "mode": "all",
        "max-examples": 50,
        "deterministic": True,
        "dictionaries": {"string": {"dictionary": "edges", "probability": 0.5}},
    },
    "phases": {"stateful": {"enabled": False}},  # one request at a time, from each operation
    # The key's security scheme gets a well-formed placeholder, so the examples phase does
    # not fill the header with a NUL; each case then sends the tenant's real key.
    "auth": {"openapi": {"ApiKey": {"api_key": "ck_placeholder_fuzz"}}},
}


# chunks and raw uploads are bytes, as application/octet-stream is
schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/x-ndjson"], "application/octet-stream"
)


def _served_schema() -> dict:
    """The document GET /api/v1/schema/ serves, read in process at collection (the server
    starts later, with the first test; the schema needs no database)."""
    response = Client().get("/api/v1/schema/")
    assert response.status_code == 200, response.content
    return json.loads(response.content)


# schemathesis.pytest.from_fixture (a schema loaded from the running server) would read a
# pytest node attribute that pytest 9 no longer has; the served document is the same one.
schema = schemathesis.openapi.from_dict(
    _served_schema(), config=SchemathesisConfig.from_dict(CONFIG)
)


@pytest.fixture(scope="module")
def web_server(django_db_setup, tmp_path_factory):
    # the quota would answer 429 long before the examples run out
    env = {"API_RATE_LIMIT": "100000/min"}
    with running_web_server(log_dir=tmp_path_factory.mktemp("gunicorn"), env=env) as base:
        yield base


@pytest.fixture
def api_key(web_server, transactional_db) -> str:
    return tenant_create(name="Fuzzed")[1].raw


@schema.parametrize()
# one tenant (and its key) for all the inputs of an operation, on purpose
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_requests_get_documented_answers_never_a_5xx(case, web_server, api_key):
    """Every operation of the schema, with generated parameters, headers and bodies."""
    case.headers = {**(case.headers or {}), "X-API-Key": api_key}
    response = case.call_and_validate(base_url=web_server, checks=CHECKS)
    # the tenant's key went (never the placeholder), or none at all when schemathesis tests
    # the security scheme by leaving it out; with the key, never a 401
    sent = response.request.headers.get("X-API-Key")
    assert sent in (api_key, None), sent
    assert sent is None or response.status_code != 401, response.text
