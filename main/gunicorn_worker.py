"""gunicorn's gevent worker, with the errors gunicorn answers by itself (a malformed request
line, headers too large, a bad Content-Length, Content-Length beside chunked) written as
application/problem+json like every other error of the service, instead of an HTML page;
and its logger, which builds an access line only when something writes it."""

from __future__ import annotations

import json
import logging
import os
import uuid
from contextvars import ContextVar

from gunicorn import util
from gunicorn.instrument.statsd import Statsd
from gunicorn.workers import ggevent
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from main.web_balance import BalancedServer, connection_table, must_close

# Seconds a socket read or write may wait: a client that stops sending its body (or
# reading its answer) this long is dropped, its request refused as an incomplete body.
CLIENT_TIMEOUT = float(os.environ.get("WEB_CLIENT_TIMEOUT") or 60)
# Requests one kept-alive connection serves before the answer says `Connection: close`
# (nginx's keepalive_requests). Connections are spread over the worker processes by
# `main.web_balance`; this bounds what one connection does besides.
KEEPALIVE_REQUESTS = int(os.environ.get("WEB_KEEPALIVE_REQUESTS") or 100)
_CODES = {400: "bad_request", 403: "forbidden", 431: "header_too_large", 501: "not_implemented"}


# The request gunicorn refuses, where it read that much (each greenlet has a context of
# its own), for `write_problem`: a HEAD is answered without a body.
_refusing: ContextVar = ContextVar("refusing", default=None)
# Whether the connection is counted in the connection table (until its answer says it closes)
_counted: ContextVar = ContextVar("counted", default=False)


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`'s job, as an RFC 9457 problem document with an
    X-Request-Id of its own, as every answer of the service has (logged with it)."""
    request_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "type": "about:blank",
            "title": reason,
            "status": status_int,
            "detail": mesg or reason,
            "code": _CODES.get(status_int, "server_error" if status_int >= 500 else "error"),
            "request_id": request_id,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        f"X-Request-Id: {request_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    logging.getLogger("gunicorn.error").info(
        "answered %s %s", status_int, reason, extra={"request_id": request_id}
    )
    if getattr(_refusing.get(), "method", None) == "HEAD":
        body = b""
    util.write_nonblock(sock, head.encode("latin-1") + body)


class ProblemGeventWorker(GeventWorker):
    """gevent: every connection is a greenlet, so slow or idle clients cost a little memory
    each instead of a whole worker (a sync worker serves one client at a time, a gthread
    worker one per thread). psycopg 3 waits cooperatively under gevent by itself. Its
    connections are spread evenly over the worker processes (`main.web_balance`)."""

    balance_slot: int | None = None  # its row of the connection table (`pre_fork`)

    def init_process(self):
        # gunicorn has no hook for the pages it writes itself; its handle_error calls
        # util.write_error at call time, so replacing it in this worker process is enough.
        util.write_error = write_problem
        # GeventWorker.run makes its servers from this module-level name, at call time
        ggevent.StreamServer = BalancedServer
        super().init_process()

    def run(self):
        if self.balance_slot is not None:  # counted among the workers once it accepts
            connection_table().take(self.balance_slot)
        super().run()

    def handle(self, listener, client, addr):
        # gunicorn bounds the wait for a request's head (keepalive, under gevent.Timeout)
        # but not for its body: without this, a client that sends half a body and stops
        # holds its request (and the request's database connection) for ever.
        # (GeventWorker.handle would make the socket blocking without a timeout, so this
        # does its part and goes on from its parent.)
        client.settimeout(CLIENT_TIMEOUT)
        counted = self.balance_slot is not None
        if counted:
            connection_table().opened()
        token = _counted.set(counted)
        try:
            AsyncWorker.handle(self, listener, client, addr)
        finally:
            if _counted.get():
                connection_table().closed()
            _counted.reset(token)

    def handle_error(self, req, client, addr, exc):
        token = _refusing.set(req or getattr(exc, "req", None))
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            _refusing.reset(token)

    def handle_request(self, listener_name, req, sock, addr):
        if req.req_number >= KEEPALIVE_REQUESTS:
            req.must_close = True  # gunicorn answers `Connection: close`, then closes
        elif _counted.get() and must_close():
            # uncounted at once: the requests of this worker's other connections, deciding
            # meanwhile, see it gone, and do not all leave for the one move that is needed
            connection_table().closed()
            _counted.set(False)
            req.must_close = True
        return super().handle_request(listener_name, req, sock, addr)


class QuietAccessLogger(Statsd):
    """gunicorn's logger, without its access line when nothing would write it: gunicorn
    builds every line's fields (a dict of some thirty) before its logger drops the line,
    and `AccessMiddleware` writes the service's own. `gunicorn.access` given a handler (or
    propagating) writes them again. It is gunicorn's StatsD logger, which gunicorn picks
    by itself only when no logger class is named: with `--statsd-host` it sends its
    metrics as before (without, it sends nothing)."""

    def access(self, resp, req, environ, request_time):
        if self.sock is not None or (
            self.access_log.isEnabledFor(logging.INFO)
            and (self.access_log.handlers or self.access_log.propagate)
        ):
            super().access(resp, req, environ, request_time)
