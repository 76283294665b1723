"""Resume state and content-derived keys: what makes a rerun continue, never repeat.

A state file keeps, per file, its session token, upload id and offset, so a run stopped by
Ctrl-C, a dropped connection or a server restart continues where it stopped. Each file's
`Idempotency-Key` derives from the tenant, the record type and the file's sha256, so even
without the state file a rerun never loads anything twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

STATE_FILE_NAME = ".bulk_ingest_state.json"
MiB = 1 << 20


def idempotency_key(*, tenant_id: str, record_type: str | None, sha256: str, route: str) -> str:
    """The file's Idempotency-Key: the same content for the same tenant and type gets the
    same key in every run. `route` ("upload" or "session", with a retry number for a
    replacement session) keeps the two endpoints' keys apart."""
    return f"bulk-ingest:{route}:{tenant_id}:{record_type or 'auto'}:{sha256}"


def state_key(*, tenant: str, record_type: str | None, sha256: str) -> str:
    """A file's entry in the state file: its tenant (id, else name), type and content."""
    return f"{tenant}:{record_type}:{sha256}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


class StateFile:
    """Per file: its session token, upload id and offset, so a later run resumes. Written
    atomically (a temporary file renamed over it) after every change; thread-safe. Without
    a path it is kept in memory only."""

    VERSION = 1

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._files: dict[str, dict] = read_state(path) if path is not None else {}

    def get(self, key: str) -> dict:
        with self._lock:
            return dict(self._files.get(key, {}))

    def update(self, key: str, **values: Any) -> None:
        with self._lock:
            self._files[key] = {**self._files.get(key, {}), **values}
            if self.path is not None:
                write_state(self.path, self._files)


def read_state(path: Path) -> dict[str, dict]:
    """The files recorded in a state file; {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != StateFile.VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def write_state(path: Path, files: dict[str, dict]) -> None:
    """Replace the state file in one step: a crash leaves the old or the new one whole."""
    text = json.dumps({"version": StateFile.VERSION, "files": files}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
