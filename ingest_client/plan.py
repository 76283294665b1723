"""The plan: which tenants and files a data directory holds, and in which stages they go.

The data directory holds one folder per tenant and a manifest, `tenants.json` (a list of
`{"tenant_id", "name", "api_key", "dir"}`), as `manage.py generate_data` writes it. Per tenant,
files are staged in dependency order: customers and products, then orders, then order items,
then files whose type the server decides.
"""

from __future__ import annotations

import gzip
import json
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest_client.transport import api_key_problem

# Dependency order: a stage's parents are all in earlier stages.
STAGES: tuple[tuple[str, ...], ...] = (("customers", "products"), ("orders",), ("order_items",))
RECORD_TYPES = tuple(t for stage in STAGES for t in stage)
DATA_SUFFIXES = (".ndjson", ".jsonl")
COMPRESSED_SUFFIXES = ("", ".gz", ".zst")


class ConfigError(Exception):
    """The data directory or the options cannot be used; nothing was sent."""


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    api_key: str
    folder: Path


@dataclass(frozen=True)
class FileJob:
    """One file to upload for one tenant."""

    tenant: Tenant
    path: Path
    record_type: str | None  # None: the server decides from the first rows
    size: int
    stage: int
    via_session: bool

    @property
    def label(self) -> str:
        return f"{self.tenant.name}/{self.path.name}"


@dataclass(frozen=True)
class TenantPlan:
    tenant: Tenant
    stages: tuple[tuple[FileJob, ...], ...]  # non-empty stages, in order
    empty: tuple[Path, ...] = ()  # empty files: nothing to send (the API refuses them)
    # data-named entries that are no file to send (a folder, a pipe): each with what it is
    unsendable: tuple[tuple[Path, str], ...] = ()

    @property
    def jobs(self) -> list[FileJob]:
        return [job for stage in self.stages for job in stage]


def load_tenants(
    data_dir: Path, *, tenant_id: str | None = None, api_key: str | None = None
) -> list[Tenant]:
    """The tenants of the manifest (`tenants.json`), or, without one, the data directory as
    the one tenant of `api_key`. `tenant_id` (an id or a name) selects one tenant; `api_key`
    replaces the manifest's key."""
    manifest = data_dir / "tenants.json"
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is not a directory")
    if not manifest.exists():
        if not api_key:
            raise ConfigError(f"{manifest} does not exist; give --api-key to upload {data_dir}")
        if (problem := api_key_problem(api_key)) is not None:
            raise ConfigError(problem)
        return [Tenant(tenant_id or "", data_dir.name, api_key, data_dir)]
    try:
        entries = json.loads(manifest.read_text())
        tenants = [
            Tenant(
                tenant_id=str(entry["tenant_id"]),
                name=str(entry.get("name") or entry["tenant_id"]),
                api_key=api_key or str(entry.get("api_key") or ""),
                folder=data_dir / str(entry.get("dir") or entry.get("name") or entry["tenant_id"]),
            )
            for entry in entries
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{manifest} is not a list of {{tenant_id, name, api_key, dir}}: {exc}"
        ) from exc
    if tenant_id is not None:
        tenants = [t for t in tenants if tenant_id in (t.tenant_id, t.name)]
        if not tenants:
            raise ConfigError(f"no tenant {tenant_id!r} in {manifest}")
    for tenant in tenants:
        if not tenant.api_key:
            raise ConfigError(f"no api_key for tenant {tenant.name} in {manifest}; use --api-key")
        if (problem := api_key_problem(tenant.api_key)) is not None:
            raise ConfigError(f"tenant {tenant.name}: {problem}")
        if not tenant.folder.is_dir():
            raise ConfigError(f"the folder of tenant {tenant.name}, {tenant.folder}, is missing")
    return tenants


def is_data_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and any(
        name.endswith(data + comp) for data in DATA_SUFFIXES for comp in COMPRESSED_SUFFIXES
    )


def record_type_of(path: Path) -> str | None:
    """The record type of a file: the longest type its name starts with, else the id field
    of its first row (plain or gzip files), else None (the server decides)."""
    name = path.name.lower()
    by_name = [t for t in RECORD_TYPES if name.startswith(t)]
    if by_name:
        return max(by_name, key=len)
    return _record_type_of_first_row(path)


def _record_type_of_first_row(path: Path) -> str | None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    if path.name.lower().endswith(".zst"):
        return None
    try:
        with opener(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    keys = json.loads(line)
                    break
            else:
                return None
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(keys, dict):
        return None
    for key, record_type in (
        ("order_item_id", "order_items"),
        ("order_id", "orders"),
        ("product_id", "products"),
        ("customer_id", "customers"),
    ):
        if key in keys:
            return record_type
    return None


def stage_of(record_type: str | None) -> int:
    """The 0-based stage of a record type; files of undecided type go last."""
    for index, types in enumerate(STAGES):
        if record_type in types:
            return index
    return len(STAGES)


def not_a_file(path: Path) -> str | None:
    """What a data-named directory entry is when it is not a regular file (links followed),
    as the CLI says it; None for a regular file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a broken link" if path.is_symlink() else "gone"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (its size and content are not known before it is read)"
    return "not a regular file"


def build_plan(tenants: Sequence[Tenant], *, session_threshold: int) -> list[TenantPlan]:
    """Every data file of every tenant, grouped into stages in dependency order; files
    larger than `session_threshold` bytes go through resumable sessions. Empty files are
    set apart (`TenantPlan.empty`): there is nothing in them to send; so are entries named
    as data files that are not regular files (`TenantPlan.unsendable`), a failure."""
    plans = []
    for tenant in tenants:
        jobs, empty, unsendable = [], [], []
        for path in sorted(p for p in tenant.folder.iterdir() if is_data_file(p)):
            if (what := not_a_file(path)) is not None:
                unsendable.append((path, what))
                continue
            size = path.stat().st_size
            if not size:
                empty.append(path)
                continue
            record_type = record_type_of(path)
            jobs.append(
                FileJob(
                    tenant=tenant,
                    path=path,
                    record_type=record_type,
                    size=size,
                    stage=stage_of(record_type),
                    via_session=size > session_threshold,
                )
            )
        stages = tuple(
            tuple(job for job in jobs if job.stage == index) for index in range(len(STAGES) + 1)
        )
        plans.append(
            TenantPlan(
                tenant, tuple(stage for stage in stages if stage), tuple(empty), tuple(unsendable)
            )
        )
    return plans
