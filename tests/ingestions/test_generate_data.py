"""`manage.py generate_data`: every option explained, the manifest of live keys readable by
its owner only, and tenant names that never clash with earlier runs'."""

from __future__ import annotations

import json
import os
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import (
    CommandError,
    call_command,
    get_commands,
    load_command_class,
)

from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create, tenant_from_api_key

SMALL = ["--customers", "3", "--products", "2", "--orders", "4"]
OPTIONS = {"out", "tenants", "customers", "products", "orders", "items_per_order", "seed"}
OPTIONS |= {"fault_rate"}


def generate(out: Path, *args: str) -> list[dict]:
    call_command("generate_data", "--out", str(out), *SMALL, *args, stdout=StringIO())
    return json.loads((out / "tenants.json").read_text())


def test_every_option_has_help():
    """No option of the command is left without a `help` text (Django's own have theirs)."""
    command = load_command_class(get_commands()["generate_data"], "generate_data")
    parser = command.create_parser("manage.py", "generate_data")
    own = [a for a in parser._actions if a.dest in OPTIONS]
    assert {a.dest for a in own} == OPTIONS
    assert [a.dest for a in parser._actions if not a.help] == []


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_manifest_of_keys_is_readable_by_its_owner_only(db, tmp_path):
    """tenants.json holds live keys: mode 0600, whatever the umask allows."""
    previous = os.umask(0o022)
    try:
        manifest = generate(tmp_path / "data")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "data" / "tenants.json") == 0o600
    assert [entry["name"] for entry in manifest] == ["tenant-01", "tenant-02"]
    for entry in manifest:
        assert str(tenant_from_api_key(raw_key=entry["api_key"]).id) == entry["tenant_id"]
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == []


def test_a_manifest_written_over_a_wider_one_is_0600_too(db, tmp_path):
    """An earlier, world-readable tenants.json is replaced, not reused with its mode."""
    out = tmp_path / "data"
    out.mkdir()
    (out / "tenants.json").write_text("[]")
    (out / "tenants.json").chmod(0o644)
    generate(out, "--tenants", "1")
    assert _mode(out / "tenants.json") == 0o600


def test_a_second_run_numbers_its_tenants_on(db, tmp_path):
    """Names are unique: a second run (or a tenant already called tenant-02) takes the
    next free numbers, and the manifest and folders say which."""
    tenant_create(name="TENANT-02")
    first = generate(tmp_path / "one")
    second = generate(tmp_path / "two", "--tenants", "1")
    assert [e["name"] for e in first] == ["tenant-01", "tenant-03"]
    assert [e["name"] for e in second] == ["tenant-04"]
    assert [e["dir"] for e in second] == ["tenant-04"]
    assert (tmp_path / "two" / "tenant-04" / "customers_1.ndjson").exists()


def test_the_same_seed_writes_the_same_files_whatever_the_names(db, tmp_path):
    """Skipped names do not change the data: a tenant's files follow its place in the run."""
    generate(tmp_path / "one", "--tenants", "1")
    generate(tmp_path / "two", "--tenants", "1")
    for name in ("customers", "products", "orders", "order_items"):
        one = (tmp_path / "one" / "tenant-01" / f"{name}_1.ndjson").read_bytes()
        two = (tmp_path / "two" / "tenant-02" / f"{name}_1.ndjson").read_bytes()
        assert one == two


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenants", "0"], "--tenants must be at least 1"),
        (["--fault-rate", "2"], "--fault-rate must be between 0 and 1"),
        (["--orders", "-1"], "--orders and --items-per-order must be at least 0"),
        (["--items-per-order", "-1"], "--orders and --items-per-order must be at least 0"),
        (["--items-per-order", "nan"], "--orders and --items-per-order must be at least 0"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(db, tmp_path, args, message):
    """A refused value creates no tenant and writes no manifest."""
    with pytest.raises(CommandError, match=message):
        generate(tmp_path / "data", *args)
    assert not (tmp_path / "data" / "tenants.json").exists()


def test_an_out_that_is_a_file_is_refused_before_a_tenant_is_made(db, tmp_path):
    """`--out` naming a file: a one-line error, no tenant (it was a FileExistsError)."""
    taken = tmp_path / "tenants.json"
    taken.write_text("[]")
    with pytest.raises(CommandError, match=f"--out {taken} is not a directory"):
        generate(taken)
    assert not Tenant.objects.exists()
