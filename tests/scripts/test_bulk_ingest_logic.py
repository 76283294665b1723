"""The bulk ingestion CLI's pure parts: the plan and its stages, the Idempotency-Key, the
retry policy, the state file and the exit code. No server needed."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from scripts.bulk_ingest import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    ConfigError,
    FileResult,
    RetryPolicy,
    StateFile,
    build_plan,
    exit_code,
    idempotency_key,
    is_retryable,
    load_tenants,
    offset_of,
    parse_retry_after,
    parse_size,
    read_state,
    record_type_of,
    write_state,
)


def _data_dir(tmp_path, files: dict[str, bytes], *, tenants=("t1",)):
    manifest = []
    for name in tenants:
        folder = tmp_path / name
        folder.mkdir()
        for filename, data in files.items():
            (folder / filename).write_bytes(data)
        manifest.append(
            {"tenant_id": f"id-{name}", "name": name, "api_key": f"key-{name}", "dir": name}
        )
    (tmp_path / "tenants.json").write_text(json.dumps(manifest))
    return tmp_path


def test_the_plan_puts_parents_first_and_orders_and_items_in_later_stages(tmp_path):
    """Files of one tenant are staged customers+products, orders, order_items, then the rest."""
    data = _data_dir(
        tmp_path,
        {
            "order_items_1.ndjson": b"{}\n",
            "orders_2.ndjson.gz": b"x",
            "orders_1.ndjson": b"{}\n",
            "products_1.jsonl": b"{}\n",
            "customers_1.ndjson": b"{}\n" * 10,
            "mystery.ndjson": b'{"foo": 1}\n',
            "notes.txt": b"not data",
            ".hidden.ndjson": b"{}\n",
        },
    )
    (plan,) = build_plan(load_tenants(data), session_threshold=20)
    stages = [[(job.path.name, job.record_type) for job in stage] for stage in plan.stages]
    assert stages == [
        [("customers_1.ndjson", "customers"), ("products_1.jsonl", "products")],
        [("orders_1.ndjson", "orders"), ("orders_2.ndjson.gz", "orders")],
        [("order_items_1.ndjson", "order_items")],
        [("mystery.ndjson", None)],
    ]
    assert [job.via_session for job in plan.jobs] == [True, False, False, False, False, False]


def test_a_files_type_comes_from_its_longest_name_prefix_or_its_first_row(tmp_path):
    """`order_items_*` is order items (not orders); unnamed files are told by their id field."""
    items = tmp_path / "order_items_9.ndjson"
    items.write_bytes(b"")
    sniffed = tmp_path / "export.ndjson.gz"
    sniffed.write_bytes(gzip.compress(b'\n{"order_id": "x", "customer_id": "y"}\n'))
    unknown = tmp_path / "export.ndjson"
    unknown.write_bytes(b"[1, 2]\n")
    assert record_type_of(items) == "order_items"
    assert record_type_of(sniffed) == "orders"
    assert record_type_of(unknown) is None


def test_tenants_are_selected_by_id_or_name_and_a_key_can_be_overridden(tmp_path):
    """--tenant-id picks one tenant; --api-key replaces the manifest's key."""
    data = _data_dir(tmp_path, {"customers_1.ndjson": b"{}\n"}, tenants=("a", "b"))
    assert [t.name for t in load_tenants(data)] == ["a", "b"]
    assert [t.api_key for t in load_tenants(data, tenant_id="id-b")] == ["key-b"]
    assert [t.api_key for t in load_tenants(data, tenant_id="a", api_key="k")] == ["k"]
    with pytest.raises(ConfigError, match="no tenant 'zzz'"):
        load_tenants(data, tenant_id="zzz")


def test_without_a_manifest_the_directory_is_one_tenant_given_a_key(tmp_path):
    """No tenants.json: the folder itself is uploaded for --api-key, else a clear error."""
    (tmp_path / "customers_1.ndjson").write_bytes(b"{}\n")
    with pytest.raises(ConfigError, match="give --api-key"):
        load_tenants(tmp_path)
    (tenant,) = load_tenants(tmp_path, api_key="k", tenant_id="t")
    assert (tenant.api_key, tenant.tenant_id, tenant.folder) == ("k", "t", tmp_path)


def test_the_idempotency_key_depends_on_tenant_type_content_and_route_only():
    """The same file gets the same key in every run; another tenant, type or sha256 does not."""
    key = idempotency_key(tenant_id="t1", record_type="orders", sha256="ab" * 32, route="upload")
    assert key == idempotency_key(
        tenant_id="t1", record_type="orders", sha256="ab" * 32, route="upload"
    )
    others = {
        idempotency_key(tenant_id="t2", record_type="orders", sha256="ab" * 32, route="upload"),
        idempotency_key(tenant_id="t1", record_type="customers", sha256="ab" * 32, route="upload"),
        idempotency_key(tenant_id="t1", record_type="orders", sha256="cd" * 32, route="upload"),
        idempotency_key(tenant_id="t1", record_type="orders", sha256="ab" * 32, route="session"),
    }
    assert key not in others
    assert len(others) == 4
    assert len(key) <= 255


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap():
    """Delays lie in [ceiling/2, ceiling] for ceiling = min(cap, base * 2**attempt)."""
    policy = RetryPolicy(base=0.5, cap=4.0)
    assert [policy.delay(n, rand=lambda: 0.0) for n in range(6)] == [0.25, 0.5, 1, 2, 2, 2]
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_retry_after_is_waited_in_full_in_seconds_or_as_a_date():
    """A server's Retry-After wins over the backoff (bounded by max_retry_after)."""
    policy = RetryPolicy(base=0.5, cap=4.0, max_retry_after=60)
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(0, retry_after=600.0) == 60
    assert parse_retry_after("3") == 3.0
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "body", "retry"),
    [
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (409, {"code": "idempotency_in_flight"}, True),
        (409, {"code": "offset_mismatch", "offset": 10}, False),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (422, {}, False),
        (200, {}, False),
    ],
)
def test_only_answers_a_retry_can_fix_are_retried(status, body, retry):
    """5xx, 429 and an in-flight Idempotency-Key are retried; other 4xx are not."""
    assert is_retryable(httpx.Response(status, json=body)) is retry


def test_the_servers_offset_comes_from_the_header_or_the_body():
    """A 409 says where to continue: Upload-Offset, else `offset` in the problem body."""
    assert offset_of(httpx.Response(409, headers={"Upload-Offset": "42"}, json={})) == 42
    assert offset_of(httpx.Response(409, json={"offset": 7})) == 7
    assert offset_of(httpx.Response(409, json={})) is None


def test_the_state_file_survives_a_new_process_and_is_replaced_atomically(tmp_path):
    """Updates merge per file and are on disk at once; no temporary file is left behind."""
    path = tmp_path / "state.json"
    state = StateFile(path)
    state.update("k1", token="t1", offset=0)
    state.update("k1", offset=1024)
    state.update("k2", upload_id="u2")
    assert StateFile(path).get("k1") == {"token": "t1", "offset": 1024}
    assert read_state(path) == {"k1": {"token": "t1", "offset": 1024}, "k2": {"upload_id": "u2"}}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_the_state_file_is_safe_to_update_from_many_threads(tmp_path):
    """Parallel uploads record their progress without losing each other's entries."""
    state = StateFile(tmp_path / "state.json")
    threads = [
        threading.Thread(target=state.update, args=(f"k{n}",), kwargs={"offset": n})
        for n in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_state(tmp_path / "state.json")) == 20


def test_an_unreadable_state_file_starts_afresh(tmp_path):
    """A truncated or foreign file is ignored rather than crashing the run."""
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert read_state(path) == {}
    write_state(path, {"k": {"offset": 1}})
    assert read_state(path) == {"k": {"offset": 1}}


def _result(tmp_path, state: str | None, *, rejected=0, pending=0, error=None) -> FileResult:
    from scripts.bulk_ingest import FileJob, Tenant

    job = FileJob(Tenant("t", "t", "k", tmp_path), tmp_path / "x.ndjson", "customers", 1, 0, False)
    upload = None
    if state is not None:
        upload = {"id": "u", "state": state, "rows": {"rejected": rejected, "pending": pending}}
    return FileResult(job, upload=upload, error=error)


def test_the_exit_code_is_0_clean_1_rejected_or_pending_2_failed_or_unsent(tmp_path):
    """SPEC 6: 0 all completed cleanly; 1 all processed with rejects or pending; 2 otherwise."""
    clean = _result(tmp_path, "completed")
    assert exit_code([clean, clean]) == EXIT_OK
    assert exit_code([clean, _result(tmp_path, "completed_with_errors", rejected=3)]) == 1
    assert exit_code([clean, _result(tmp_path, "completed", pending=2)]) == EXIT_REJECTED
    assert exit_code([clean, _result(tmp_path, "failed")]) == EXIT_FAILED
    assert exit_code([clean, _result(tmp_path, None, error="401")]) == EXIT_FAILED
    assert exit_code([clean, _result(tmp_path, "processing", error="timeout")]) == EXIT_FAILED
    assert exit_code([]) == EXIT_FAILED


def test_sizes_are_read_in_binary_units():
    """--session-threshold and --chunk-size take 8MiB, 512k, 1g or plain bytes."""
    assert [parse_size(s) for s in ("8MiB", "512k", "1g", "100", "2 MB")] == [
        8 << 20,
        512 << 10,
        1 << 30,
        100,
        2 << 20,
    ]
