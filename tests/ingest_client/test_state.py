"""Resume state and keys: the Idempotency-Key from content, the state file on disk."""

from __future__ import annotations

import threading

from ingest_client.state import StateFile, idempotency_key, read_state, write_state


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
