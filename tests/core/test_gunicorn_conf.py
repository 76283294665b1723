"""gunicorn.conf.py's hooks, run in this process as gunicorn runs them in a worker."""

from __future__ import annotations

import datetime
import gc
import importlib.util
import os

from scripts.stack import ROOT


def _conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_a_worker_leaves_what_it_loaded_out_of_the_garbage_collectors_passes(monkeypatch):
    """gunicorn.conf.py's `post_worker_init`: Django, the project and every view imported
    and frozen (`gc.freeze`), so that a full collection walks only what requests made (it
    walked everything, 60-80 ms a pass under load, every few seconds)."""
    for name in ("DATABASE_CONN_MAX_AGE", "DATABASE_POOL_SIZE"):  # the file sets defaults
        monkeypatch.setenv(name, os.environ.get(name, ""))
    conf = _conf()
    gc.unfreeze()
    try:
        conf.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_gunicorns_access_line_is_built_only_when_something_writes_it(monkeypatch):
    """`QuietAccessLogger`, gunicorn.conf.py's logger: the service's settings give
    `gunicorn.access` no handler (the access line is `AccessMiddleware`'s), so gunicorn's
    own line, and the thirty-odd fields it builds for it per request, are skipped; given a
    handler, gunicorn writes it again; with StatsD on, its metrics are sent as gunicorn's
    own StatsD logger sends them."""
    import logging
    import socket

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from main.gunicorn_worker import QuietAccessLogger

    for name in ("DATABASE_CONN_MAX_AGE", "DATABASE_POOL_SIZE"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    assert _conf().logger_class == "main.gunicorn_worker.QuietAccessLogger"

    built = []
    monkeypatch.setattr(Logger, "atoms", lambda self, *args: built.append(args) or {"s": "202"})
    logger = QuietAccessLogger.__new__(QuietAccessLogger)  # no setup: logging stays as it is
    logger.cfg = Config()
    logger.cfg.set("accesslog", "-")
    logger.cfg.set("access_log_format", "%(s)s")
    logger.access_log = logging.getLogger("tests.gunicorn.access")
    logger.sock, logger.prefix, logger.dogstatsd_tags = None, "", ""
    monkeypatch.setattr(logger.access_log, "propagate", False)
    logger.access_log.setLevel(logging.INFO)

    class Resp:
        status = "202 Accepted"

    took = datetime.timedelta(milliseconds=3)
    logger.access(Resp(), "req", {}, took)
    assert built == []

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.access_log.addHandler(handler)
    try:
        logger.access(Resp(), "req", {}, took)
    finally:
        logger.access_log.removeHandler(handler)
    assert len(built) == 1
    assert lines == ["202"]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        logger.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        logger.sock.connect(server.getsockname())
        try:
            logger.access(Resp(), "req", {}, took)
            sent = {server.recv(512).decode() for _ in range(3)}
        finally:
            logger.sock.close()
    assert sent == {
        "gunicorn.request.duration:3.0|ms",
        "gunicorn.requests:1|c|@1.0",
        "gunicorn.request.status.202:1|c|@1.0",
    }
