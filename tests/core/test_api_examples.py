"""The OpenAPI document's examples are true: each answer example is valid under its
operation's response schema, each request example for live records is accepted whole by
the API, and the main operations carry a summary and examples."""

from __future__ import annotations

import copy
import json

import jsonschema_rs
import pytest
from django.test import Client

from apps.tenants.services import tenant_create

MAIN_OPERATIONS = {
    "ingest_comprehensive",
    "uploads_retrieve",
    "uploads_errors",
    "records_create",
    "records_create_mixed",
    "sessions_create",
    "rules_update",
    "webhooks_create",
}


@pytest.fixture
def schema(db) -> dict:
    return json.loads(Client().get("/api/v1/schema/").content)


def _operations(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def _json_schema(node):
    """OpenAPI 3.0's schema dialect as JSON Schema: `nullable` becomes a null alternative."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def _validator(schema: dict, media_schema: dict):
    document = {"components": _json_schema(copy.deepcopy(schema["components"]))}
    return jsonschema_rs.Draft202012Validator({**document, **_json_schema(media_schema)})


def test_every_operation_has_a_summary_and_the_main_ones_have_examples(schema):
    """Every operation is summarised; the main ones show an example."""
    unsummarised = [op["operationId"] for _, _, op in _operations(schema) if not op.get("summary")]
    assert unsummarised == [] or unsummarised == ["tus_head"]
    with_examples = {
        op["operationId"] for _, _, op in _operations(schema) if "examples" in json.dumps(op)
    }
    assert with_examples >= MAIN_OPERATIONS


def test_each_answer_example_is_valid_under_its_response_schema(schema):
    """An example a generated client's user copies is an answer the schema allows."""
    checked = 0
    for path, method, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            for media, content in response.get("content", {}).items():
                validator = _validator(schema, content["schema"])
                for name, example in content.get("examples", {}).items():
                    errors = [e.message for e in validator.iter_errors(example["value"])]
                    assert errors == [], (method, path, status, media, name)
                    checked += 1
    assert checked >= 5


def test_each_live_records_request_example_is_accepted_whole(schema, api):
    """The request examples of the live records operations, sent as they are, are stored
    without a reject."""
    _, issued = tenant_create(name="examples")
    client = api.as_tenant(issued.raw)
    sent = 0
    for path, _method, operation in _operations(schema):
        if operation["operationId"] not in ("records_create", "records_create_mixed"):
            continue
        content = operation["requestBody"]["content"]["application/json"]
        for example in content["examples"].values():
            url = path.replace("{record_type}", "customers")
            answer = client.post(url, example["value"], format="json")
            assert answer.status_code == 202, answer.content
            assert answer.json()["rejected"] == 0, answer.json()["rejects"]
            assert answer.json()["records"] == len(example["value"])
            sent += 1
    assert sent == 2


def test_the_session_request_example_starts_a_session(schema, api):
    """The session example is a valid request."""
    _, issued = tenant_create(name="examples")
    operation = schema["paths"]["/api/v1/ingest/sessions/"]["post"]
    example = next(iter(operation["requestBody"]["content"]["application/json"]["examples"]))
    value = operation["requestBody"]["content"]["application/json"]["examples"][example]["value"]
    answer = api.as_tenant(issued.raw).post("/api/v1/ingest/sessions/", value, format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["size"] == value["size"]
