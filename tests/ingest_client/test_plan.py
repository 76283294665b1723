"""The plan: tenants from the manifest, files and their types, stages in dependency order."""

from __future__ import annotations

import gzip
import io
import json
import os

import pytest
from rich.console import Console

from apps.ingestions.engine import RECORD_ORDER, RECORD_STAGES
from ingest_client.cli import main
from ingest_client.plan import (
    RECORD_TYPES,
    STAGES,
    ConfigError,
    build_plan,
    load_tenants,
    record_type_of,
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


def test_empty_files_are_set_apart_and_the_dry_run_says_they_are_skipped(tmp_path):
    """An empty file is no job (the API refuses an empty body): the dry run and the run
    name it as skipped, and a directory of empty files only is nothing to do (exit 0)."""
    data = _data_dir(tmp_path, {"customers_1.ndjson": b"", "orders_1.ndjson": b"{}\n"})
    (plan,) = build_plan(load_tenants(data), session_threshold=20)
    assert [job.path.name for job in plan.jobs] == ["orders_1.ndjson"]
    assert [path.name for path in plan.empty] == ["customers_1.ndjson"]
    out = io.StringIO()
    assert main(["--data-dir", str(data), "--dry-run"], console=Console(file=out)) == 0
    assert "t1/customers_1.ndjson: empty, skipped" in out.getvalue()
    (data / "t1" / "orders_1.ndjson").write_bytes(b"")
    out = io.StringIO()
    assert main(["--data-dir", str(data)], console=Console(file=out)) == 0
    assert "t1/orders_1.ndjson: empty, skipped" in out.getvalue()


def test_a_data_named_pipe_folder_or_broken_link_is_named_and_fails_the_run(tmp_path, capsys):
    """An entry named as a data file that is no regular file (a named pipe, a folder, a
    link to nothing) is not sent and not passed over in silence: each is named with what it
    is, and the run, even a dry run, exits 2, as for a file that could not be sent."""
    data = _data_dir(tmp_path, {"customers_1.ndjson": b""})
    folder = data / "t1"
    os.mkfifo(folder / "orders_1.ndjson")
    (folder / "orders_2.ndjson").mkdir()
    (folder / "products_1.ndjson").symlink_to(folder / "nowhere.ndjson")
    (folder / "products_2.ndjson").symlink_to(folder / "customers_1.ndjson")  # a link: fine
    (plan,) = build_plan(load_tenants(data), session_threshold=20)
    assert plan.jobs == []
    assert [p.name for p in plan.empty] == ["customers_1.ndjson", "products_2.ndjson"]
    assert [(p.name, what.split(" (")[0]) for p, what in plan.unsendable] == [
        ("orders_1.ndjson", "a named pipe"),
        ("orders_2.ndjson", "a folder"),
        ("products_1.ndjson", "a broken link"),
    ]
    for dry in ([], ["--dry-run"]):
        assert main(["--data-dir", str(data), *dry], console=Console(file=io.StringIO())) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "t1/orders_1.ndjson: a named pipe (its size and content" in err
        assert "t1/orders_2.ndjson: a folder, not sent" in err
        assert "t1/products_1.ndjson: a broken link, not sent" in err


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


def test_the_clients_stages_are_the_engines_dependency_order():
    """The client keeps its own table of stages (it is installed without the server), and it
    is the one the engine derives from the record definition."""
    assert STAGES == RECORD_STAGES
    assert RECORD_TYPES == RECORD_ORDER
