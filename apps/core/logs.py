"""Structured logs: JSON lines (`LOG_FORMAT=json`, the default when `DJANGO_DEBUG` is off)
or readable console lines (the default in development), through the standard `logging`
module, so Django's, Celery's and gunicorn's own lines come out the same way.

Every line carries the ids bound for what is running: `request_id` (the request's
`X-Request-Id`, bound by `AccessMiddleware`, and sent on with the tasks it causes),
`tenant_id` and `upload_id` (bound by the ingestion services), `task_id` (bound by Celery's
task signals). Code logs as usual
with `logging.getLogger(__name__)`; extra fields go in `extra={...}`.

This module imports nothing of Django at import time: gunicorn's config imports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

_EMPTY: Mapping[str, str] = {}
_context: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=_EMPTY)

# Attributes every LogRecord has: anything else on a record came from `extra`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def log_bind(**ids: Any) -> Token:
    """Add ids to every log line of this thread (or task) from now on; `None` values are
    skipped. Returns a token for `log_reset`, which also undoes later binds."""
    values = {key: str(value) for key, value in ids.items() if value is not None}
    return _context.set({**_context.get(), **values})


def log_reset(token: Token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """`log_bind` for a block: the ids are unbound when it ends."""
    token = log_bind(**ids)
    try:
        yield
    finally:
        log_reset(token)


def log_fresh() -> Token:
    """Start from no ids at all (a new request or task); `log_reset` restores the old ones."""
    return _context.set(_EMPTY)


def bound_ids() -> dict[str, str]:
    return dict(_context.get())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The bound ids, then the record's `extra` fields (which win; `None` ones are left out)."""
    fields: dict[str, Any] = dict(_context.get())
    for key, value in vars(record).items():
        if key not in _RECORD_FIELDS and not key.startswith("_") and value is not None:
            fields[key] = value
    request = getattr(record, "request", None)
    if request is not None and getattr(request, "request_id", None):
        # Django's own line about a 4xx or 5xx answer comes once the middleware is done
        fields["request_id"] = request.request_id
    data = fields.get("data")
    if "task_id" not in fields and isinstance(data, dict) and "id" in data and "name" in data:
        fields["task_id"] = data["id"]  # Celery's "Task ... received" line, before the task runs
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the bound
    ids and extra fields, and the traceback as `exc_info` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """`2024-06-01 12:00:00,000 INFO apps.ingestions.services: upload started
    tenant_id=... upload_id=... task_id=...`: for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # One line an event: a path or value sent with a line break (or a NUL) in it would
        # otherwise write a line of its own, one that could pass for another event's.
        record.message = record.message.translate(_ESCAPED)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        pairs = " ".join(f"{key}={str(value).translate(_ESCAPED)}" for key, value in fields.items())
        head, _, rest = text.partition("\n")  # keep a traceback below the fields
        return f"{head} {pairs}" + (f"\n{rest}" if rest else "")


# C0 controls but tab, DEL, and the line breaks of Unicode, written as escapes
_ESCAPED = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029]
    if code != 0x09
}
_ESCAPED |= {0x0A: "\\n", 0x0D: "\\r"}


FORMATTERS = {"json": JsonFormatter, "console": ConsoleFormatter}


def log_format(environ: Mapping[str, str] = os.environ) -> str:
    """`LOG_FORMAT` (json or console); unset: json when `DJANGO_DEBUG` is off, else console."""
    chosen = environ.get("LOG_FORMAT", "").strip().lower()
    if chosen:
        if chosen not in FORMATTERS:
            raise RuntimeError(f"LOG_FORMAT must be one of {', '.join(FORMATTERS)}, not {chosen!r}")
        return chosen
    debug = environ.get("DJANGO_DEBUG", "true").strip().lower() in {"1", "true", "yes", "on"}
    return "console" if debug else "json"


def logging_config(
    *, fmt: str | None = None, level: str | None = None, environ: Mapping[str, str] = os.environ
) -> dict:
    """A `logging.config.dictConfig` dict: everything to stderr through one handler in the
    chosen format, at `LOG_LEVEL` (INFO by default). Django's LOGGING and gunicorn's
    `logconfig_dict` both use it."""
    fmt = fmt or log_format(environ)
    level = level or environ.get("LOG_LEVEL", "INFO")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": FORMATTERS[fmt]}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own console handler (DEBUG only) would print its lines a second time
            "django": {"handlers": [], "propagate": True},
            "pgserver": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            # gunicorn's own lines go through the root handler too (gunicorn.conf.py);
            # its access lines are off: AccessMiddleware writes one per request, with ids
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"handlers": [], "propagate": False},
        },
    }


# Celery: the task id on every line a task logs (and the id of the request that sent it,
# carried in the message's headers), and Django's logging kept as it is.
_task_tokens: dict[str, Token] = {}
REQUEST_ID_HEADER = "request_id"


def _task_sent(headers: dict | None = None, **kwargs: Any) -> None:
    """Before a task message is published: the sender's request id goes with it (a task
    sent by a task passes on the id it was given)."""
    request_id = _context.get().get("request_id")
    if request_id is not None and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


def _task_started(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if task_id is None:
        return
    ids = {"task_id": task_id, "task": getattr(task, "name", "")}
    request_id = getattr(getattr(task, "request", None), REQUEST_ID_HEADER, None)
    if isinstance(request_id, str):
        ids["request_id"] = request_id
    _task_tokens[task_id] = _context.set(ids)


def _task_finished(task_id: str | None = None, **kwargs: Any) -> None:
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        with contextlib.suppress(ValueError):  # set in another context: nothing to undo here
            _context.reset(token)


def _celery_logging(loglevel: Any = None, **kwargs: Any) -> None:
    """Connected to Celery's `setup_logging`, so Celery leaves the root logger to Django's
    LOGGING (this module's format); `--loglevel` applies to Celery's own loggers."""
    if loglevel:
        logging.getLogger("celery").setLevel(loglevel)


def connect_celery_signals() -> None:
    from celery import signals

    signals.before_task_publish.connect(_task_sent, weak=False, dispatch_uid="logs.task_sent")
    signals.task_prerun.connect(_task_started, weak=False, dispatch_uid="logs.task_started")
    signals.task_postrun.connect(_task_finished, weak=False, dispatch_uid="logs.task_finished")
    signals.setup_logging.connect(_celery_logging, weak=False, dispatch_uid="logs.setup")
