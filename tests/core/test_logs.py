"""Structured logs: JSON lines with the tenant, upload and task ids of an upload's whole
life, through the API and a real worker; readable lines in development."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery import signals
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.core.logs import (
    ConsoleFormatter,
    JsonFormatter,
    log_context,
    log_format,
    log_fresh,
    log_reset,
    logging_config,
)
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, order_row, uid
from apps.ingestions.models import Upload
from apps.tenants.services import tenant_create
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_log():
    """This process's log lines as LOG_FORMAT=json writes them; call it for the parsed lines."""
    config = logging_config(environ={"LOG_FORMAT": "json"})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(config["formatters"]["default"]["()"]())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def started_tasks():
    """The (task id, args) of every task a worker of this process starts."""
    started: list[tuple[str, tuple]] = []

    def record(task_id=None, args=None, **kwargs):
        started.append((task_id, tuple(args or ())))

    signals.task_prerun.connect(record, weak=False)
    try:
        yield started
    finally:
        signals.task_prerun.disconnect(record)


def _post(client, filename: str, rows: list, request_id: str) -> dict:
    file = SimpleUploadedFile(filename, ndjson_bytes(rows))
    response = client.post(
        "/api/v1/ingest/comprehensive/",
        {"file": file},
        format="multipart",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 202, response.content
    assert response["X-Request-Id"] == request_id
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_every_log_line_of_an_upload_carries_its_tenant_upload_and_task_ids(
    celery_worker, json_log, started_tasks
):
    """An orders upload waits for an unfinished customers upload, is woken by the task of
    the next customers upload and then processed: the API's lines carry tenant and upload
    ids, the worker's also the id of the task doing the work, at every state change."""
    from rest_framework.test import APIClient

    tenant, issued = tenant_create(name="logged")
    blocker = Upload.objects.create(
        tenant=tenant, record_type="customers", filename="customers_0.ndjson", sha256="0" * 64
    )  # received, never sent: the orders upload waits for it
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    orders = _post(client, "orders_1.ndjson", [order_row(customer_id=uid("lc1"))], "req-orders")
    wait_for(lambda: Upload.objects.get(id=orders["id"]).state == "waiting")
    Upload.objects.filter(id=blocker.id).update(state="failed")
    customers = _post(
        client,
        "customers_1.ndjson",
        [customer_row(customer_id=uid("lc1")), {"customer_id": 1}],
        "req-customers",
    )
    for upload_id in (orders["id"], customers["id"]):
        wait_for(lambda upload_id=upload_id: Upload.objects.get(id=upload_id).is_terminal)

    def lines(upload_id: str) -> list[dict]:
        return [line for line in json_log() if line.get("upload_id") == upload_id]

    wait_for(lambda: any(line["message"] == "upload completed" for line in lines(orders["id"])))
    everything = json_log()  # every line parsed as JSON, or this would have raised
    assert all({"time", "level", "logger", "message"} <= set(line) for line in everything)

    tasks: dict[str, set[str]] = {orders["id"]: set(), customers["id"]: set()}
    for task_id, args in started_tasks:
        if args and args[0] in tasks:
            tasks[args[0]].add(task_id)
    assert (len(tasks[orders["id"]]), len(tasks[customers["id"]])) == (2, 1)
    changes = {
        upload["id"]: [
            (line["state"], line.get("task_id"))
            for line in lines(upload["id"])
            if line["logger"] == "apps.ingestions.services"
        ]
        for upload in (orders, customers)
    }
    # the request id of the request that caused each line: the request's own lines, those of
    # the task it sent, and of the tasks that task sent (the customers task woke the orders)
    caused = {
        upload["id"]: [
            (line["state"], line.get("request_id"))
            for line in lines(upload["id"])
            if line["logger"] == "apps.ingestions.services"
        ]
        for upload in (orders, customers)
    }
    assert caused[customers["id"]] == [
        ("queued", "req-customers"),
        ("processing", "req-customers"),
        ("completed_with_errors", "req-customers"),
    ]
    assert caused[orders["id"]] == [
        ("queued", "req-orders"),
        ("waiting", "req-orders"),
        ("queued", "req-customers"),
        ("processing", "req-customers"),
        ("completed", "req-customers"),
    ]
    (customers_task,) = tasks[customers["id"]]
    assert changes[customers["id"]] == [
        ("queued", None),  # by the API request
        ("processing", customers_task),
        ("completed_with_errors", customers_task),
    ]
    waited, ran = changes[orders["id"]][1][1], changes[orders["id"]][3][1]
    assert {waited, ran} == tasks[orders["id"]]
    assert changes[orders["id"]] == [
        ("queued", None),
        ("waiting", waited),
        ("queued", customers_task),  # woken at the end of the customers upload's task
        ("processing", ran),
        ("completed", ran),
    ]
    for upload in (orders, customers):
        own = lines(upload["id"])
        assert {line["tenant_id"] for line in own} == {str(tenant.id)}
        access = [line for line in own if line["logger"] == "apps.access"]
        assert [(a["method"], a["path"], a["status"]) for a in access] == [
            ("POST", "/api/v1/ingest/comprehensive/", 202)
        ]
    done = [line for line in lines(customers["id"]) if line.get("state") == "completed_with_errors"]
    assert done[0]["rows"] == {
        "total": 2,
        "inserted": 1,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "pending": 0,
        "duplicates": 0,
        "warned": 0,
    }
    assert done[0]["duration_s"] >= 0


def test_log_format_is_json_when_debug_is_off_and_readable_in_development():
    """LOG_FORMAT wins; unset, DJANGO_DEBUG decides; anything else is refused."""
    assert log_format({}) == "console"
    assert log_format({"DJANGO_DEBUG": "false"}) == "json"
    assert log_format({"DJANGO_DEBUG": "false", "LOG_FORMAT": "console"}) == "console"
    assert log_format({"LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(RuntimeError, match="LOG_FORMAT"):
        log_format({"LOG_FORMAT": "xml"})


def test_bound_ids_and_extra_fields_appear_in_both_formats():
    """Ids bound for a block are on every line inside it and gone after it."""
    logger = logging.getLogger("tests.logs")
    record = logger.makeRecord("tests.logs", logging.INFO, __file__, 1, "hi %s", ("you",), None)
    record.rows = 3
    fresh = log_fresh()  # as a request or task starts: no ids left from earlier code
    try:
        with log_context(tenant_id="t1", upload_id="u1"):
            line = json.loads(JsonFormatter().format(record))
            text = ConsoleFormatter().format(record)
        after = json.loads(JsonFormatter().format(record))
    finally:
        log_reset(fresh)
    assert (line["message"], line["tenant_id"], line["upload_id"], line["rows"]) == (
        "hi you",
        "t1",
        "u1",
        3,
    )
    assert text.endswith("tests.logs: hi you tenant_id=t1 upload_id=u1 rows=3")
    assert "tenant_id" not in after


def test_a_console_line_is_one_line_whatever_a_client_put_in_it():
    """A path with a line break, a NUL or U+2028 (sent by a client) is escaped in the
    console format, message and fields alike: no forged line; a traceback stays below."""
    logger = logging.getLogger("tests.logs")
    forged = "/healthz\n2026-12-07 09:59:59,000 INFO apps.access: GET /admin/ 200\x00\u2028"
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "tests.logs", logging.INFO, __file__, 1, "GET %s", (forged,), sys.exc_info()
        )
    record.path = forged
    fresh = log_fresh()  # no ids bound by earlier code
    try:
        first, *traceback = ConsoleFormatter().format(record).split("\n")
    finally:
        log_reset(fresh)
    escaped = "/healthz\\n2026-12-07 09:59:59,000 INFO apps.access: GET /admin/ 200\\x00\\u2028"
    assert first.endswith(f"tests.logs: GET {escaped} path={escaped}")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: boom"


def test_a_process_started_with_debug_off_writes_json_lines():
    """The settings wire it: a Django process with DJANGO_DEBUG off logs JSON to stderr."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "test-only",
        "DJANGO_SETTINGS_MODULE": "main.settings",
    }
    env.pop("LOG_FORMAT", None)
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('apps.test').warning('hello %s', 'there', extra={'upload_id': 'u9'})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"], line["upload_id"]) == (
        "warning",
        "apps.test",
        "hello there",
        "u9",
    )
