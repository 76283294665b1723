"""gunicorn.conf.py's hooks, run in this process as gunicorn runs them in a worker."""

from __future__ import annotations

import gc
import importlib.util
import os

from scripts.stack import ROOT


def test_a_worker_leaves_what_it_loaded_out_of_the_garbage_collectors_passes(monkeypatch):
    """gunicorn.conf.py's `post_worker_init`: Django, the project and every view imported
    and frozen (`gc.freeze`), so that a full collection walks only what requests made (it
    walked everything, 60-80 ms a pass under load, every few seconds)."""
    for name in ("DATABASE_CONN_MAX_AGE", "DATABASE_POOL_SIZE"):  # the file sets defaults
        monkeypatch.setenv(name, os.environ.get(name, ""))
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    gc.unfreeze()
    try:
        conf.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
