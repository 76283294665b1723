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


def test_gunicorns_access_line_is_built_only_when_something_writes_it(monkeypatch):
    """`QuietAccessLogger`: the service's settings give `gunicorn.access` no handler (the
    access line is `AccessMiddleware`'s), so gunicorn's own line, and the thirty-odd fields
    it builds for it per request, are skipped; given a handler, gunicorn writes it again."""
    import logging

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from main.gunicorn_worker import QuietAccessLogger

    built = []
    monkeypatch.setattr(Logger, "atoms", lambda self, *args: built.append(args) or {"s": "202"})
    logger = QuietAccessLogger.__new__(QuietAccessLogger)  # no setup: logging stays as it is
    logger.cfg = Config()
    logger.cfg.set("accesslog", "-")
    logger.cfg.set("access_log_format", "%(s)s")
    logger.access_log = logging.getLogger("tests.gunicorn.access")
    monkeypatch.setattr(logger.access_log, "propagate", False)
    logger.access_log.setLevel(logging.INFO)

    logger.access("resp", "req", {}, None)
    assert built == []

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.access_log.addHandler(handler)
    try:
        logger.access("resp", "req", {}, None)
    finally:
        logger.access_log.removeHandler(handler)
    assert len(built) == 1
    assert lines == ["202"]
