"""gunicorn's gevent worker, with the errors gunicorn answers by itself (a malformed request
line, headers too large, a bad Content-Length, Content-Length beside chunked) written as
application/problem+json like every other error of the service, instead of an HTML page;
and its logger, which builds an access line only when something writes it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import struct
import termios
import time
import uuid
from contextvars import ContextVar

from gunicorn import util
from gunicorn.instrument.statsd import Statsd
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from apps.core.wsgi import close_after

# Seconds a socket read or write may wait: a client that stops sending its body (or
# reading its answer) this long is dropped, its request refused as an incomplete body.
CLIENT_TIMEOUT = float(os.environ.get("WEB_CLIENT_TIMEOUT") or 60)
# Requests one kept-alive connection serves before the answer says `Connection: close`
# (nginx's keepalive_requests): the client opens a new one, which any worker process may
# accept.
KEEPALIVE_REQUESTS = int(os.environ.get("WEB_KEEPALIVE_REQUESTS") or 100)
# A connection closed with its client's bytes unread is reset (RST), and a client still
# sending, or reading until the end, loses the answer before it: such a connection is
# closed for writing first, and what still comes is read and dropped, this long at most.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
_CODES = {400: "bad_request", 403: "forbidden", 431: "header_too_large", 501: "not_implemented"}


# The request gunicorn refuses, where it read that much (each greenlet has a context of
# its own), for `write_problem`: a HEAD is answered without a body.
_refusing: ContextVar = ContextVar("refusing", default=None)
# The socket of a request that sent `Expect: 100-continue`, until its `100 Continue` is sent
_expecting: ContextVar = ContextVar("expecting", default=None)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
    linger(sock)  # the rest of what gunicorn refused is likely still coming


def linger(sock) -> None:
    """Close a connection gently (Apache's lingering close): end our side, then read and
    drop what the client still sends, until it closes or `LINGER_SECONDS` or
    `LINGER_BYTES` are up. The caller closes the socket then."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    ends, dropped = time.monotonic() + LINGER_SECONDS, 0
    while dropped < LINGER_BYTES and (left := ends - time.monotonic()) > 0:
        try:
            sock.settimeout(left)
            chunk = sock.recv(65536)
        except OSError:  # a timeout, or the client gone
            return
        if not chunk:
            return
        dropped += len(chunk)


def _unread(sock) -> int:
    """How many bytes of the client's have arrived and not been read."""
    try:
        waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return struct.unpack("i", waiting)[0]


class ProblemGeventWorker(GeventWorker):
    """gevent: every connection is a greenlet, so slow or idle clients cost a little memory
    each instead of a whole worker (a sync worker serves one client at a time, a gthread
    worker one per thread). psycopg 3 waits cooperatively under gevent by itself."""

    def init_process(self):
        # gunicorn has no hook for the pages it writes itself; its handle_error calls
        # util.write_error at call time, so replacing it in this worker process is enough.
        util.write_error = write_problem
        super().init_process()

    def handle(self, listener, client, addr):
        # gunicorn bounds the wait for a request's head (keepalive, under gevent.Timeout)
        # but not for its body: without this, a client that sends half a body and stops
        # holds its request (and the request's database connection) for ever.
        # (GeventWorker.handle would make the socket blocking without a timeout, so this
        # does its part and goes on from its parent.)
        client.settimeout(CLIENT_TIMEOUT)
        AsyncWorker.handle(self, listener, client, addr)

    def handle_error(self, req, client, addr, exc):
        token = _refusing.set(req or getattr(exc, "req", None))
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            _refusing.reset(token)

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = _continue_on_read(self.wsgi)

    def handle_request(self, listener_name, req, sock, addr):
        expects = any(
            name == "EXPECT" and value.strip().lower() == "100-continue"
            for name, value in req.headers
        )
        try:
            return self._handle_request(listener_name, req, sock, addr, expects=expects)
        except StopIteration:  # the connection is closed after this answer
            if expects or _unread(sock):  # a body may be coming, or be here unread
                linger(sock)
            raise

    def _handle_request(self, listener_name, req, sock, addr, *, expects: bool):
        if req.req_number >= KEEPALIVE_REQUESTS:
            req.must_close = True  # gunicorn answers `Connection: close`, then closes
        if expects:
            # gunicorn sends `100 Continue` as it reads the head, before the request is
            # checked: a refused upload (401, 413) was then sent whole, and read and thrown
            # away. It is sent when the application first reads the body instead.
            req.headers = [(name, value) for name, value in req.headers if name != "EXPECT"]
            token = _expecting.set(sock)
            try:
                return super().handle_request(listener_name, req, sock, addr)
            finally:
                _expecting.reset(token)
        return super().handle_request(listener_name, req, sock, addr)


class _ContinueOnRead:
    """`wsgi.input` that sends `100 Continue` before its first read."""

    def __init__(self, stream, sock):
        self._stream, self._sock = stream, sock

    def _go_on(self) -> None:
        if self._sock is not None:
            self._sock.sendall(_CONTINUE)
            self._sock = None

    @property
    def asked(self) -> bool:
        """Whether the client was told to send its body."""
        return self._sock is None

    def read(self, *args):
        self._go_on()
        return self._stream.read(*args)

    def readline(self, *args):
        self._go_on()
        return self._stream.readline(*args)

    def readlines(self, *args):
        self._go_on()
        return self._stream.readlines(*args)

    def __iter__(self):
        self._go_on()
        return iter(self._stream)


def _continue_on_read(application):
    """The WSGI application, with `100 Continue` sent when it first reads the body of a
    request that expects it. Answered without reading it, the client was never told to
    send its body: the answer closes the connection (what, if anything, follows the head
    is no request)."""

    def expecting(environ, start_response):
        sock = _expecting.get()
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if sock is None or (environ.get("CONTENT_LENGTH") in (None, "", "0") and not chunked):
            return application(environ, start_response)  # no body to wait for
        body = environ["wsgi.input"] = _ContinueOnRead(environ["wsgi.input"], sock)

        def start(status, headers, exc_info=None):
            if not body.asked:
                close_after(start_response)
            return start_response(status, headers, exc_info)

        return application(environ, start)

    return expecting


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
