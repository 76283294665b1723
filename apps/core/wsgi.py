"""WSGI-level guards around the Django application (`main/wsgi.py` applies them): a request
body is read whole or refused, whatever server runs the application.

A WSGI server hands the application the body as announced by `Content-Length`, and when the
client stops early (half-closes its socket, or its connection drops) the stream simply ends:
gunicorn and wsgiref both return the bytes that did arrive and then `b""`. Without a check, a
cut upload would be stored and loaded as if it were the whole file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


class IncompleteBodyError(OSError):
    """The request body ended before its `Content-Length` (or a chunked body broke off).

    An `OSError`, like the errors of a socket read, so code that already treats a failed
    read as a client gone away (and Django, which wraps it as `UnreadablePostError`) handles
    it the same way."""


class ExactBody:
    """`wsgi.input` that raises `IncompleteBodyError` when it ends short of `length`, or when
    the server's own reader fails (a chunked body without its terminating chunk)."""

    def __init__(self, stream: Any, length: int | None, *, chunked: bool = False):
        self._stream = stream
        self._length = length
        self._chunked = chunked and length is None
        self._ended = False  # its end was read
        self._seen = 0
        self.broken = False  # ended short: the connection cannot carry another request

    def _checked(self, read: Callable[..., bytes], size: int | None) -> bytes:
        try:
            data = read() if size is None or size < 0 else read(size)
        except IncompleteBodyError:
            raise
        except Exception as exc:  # gunicorn's parser errors, a reset connection
            reason = str(exc) or type(exc).__name__
            self.broken = True
            # How much of the failed read had arrived is the server's to know (it was
            # buffering it): the bytes read whole before it are not how many were sent.
            announced = "" if self._length is None else f" of {self._length} bytes"
            raise IncompleteBodyError(
                f"The request body{announced} broke off before its end ({reason})."
            ) from exc
        self._seen += len(data)
        if not data and size != 0:
            self._ended = True
            self.require_whole()
        return data

    def require_whole(self) -> None:
        """For a caller that read the body in one call (a single read cannot see the end):
        raise unless every byte the Content-Length announced was read."""
        if self._length is not None and self._seen < self._length:
            self.broken = True
            raise IncompleteBodyError(
                f"The request body ended after {self._seen} of the {self._length} bytes its "
                "Content-Length announced."
            )

    @property
    def unread(self) -> bool:
        """Whether some of the body was never read (a request refused before its body was):
        bytes its Content-Length announced, or a chunked body's end."""
        if self._chunked:
            return not self._ended
        return self._length is not None and self._seen < self._length

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._checked(self._stream.readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def read_at_most(stream: Any, limit: int) -> bytes:
    """A body read to its end, or its first `limit` bytes and one more when it is longer.
    Reads on to the end, since a single read cannot tell a body cut short of its
    Content-Length (`ExactBody` refuses it only when the stream ends) from a whole one."""
    body = b""
    while len(body) <= limit and (more := stream.read(limit + 1 - len(body))):
        body += more
    return body


def _content_length(environ: dict) -> int | None:
    raw = environ.get("CONTENT_LENGTH") or ""
    # the server already refused a malformed header; anything else means "no length"
    return int(raw) if raw.isascii() and raw.isdigit() else None


class RequestBodyGuard:
    """WSGI middleware: wrap `wsgi.input` so that a body shorter than announced raises
    instead of looking like a complete (shorter) body."""

    def __init__(self, application: Callable):
        self.application = application

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        body = environ.get("wsgi.input")
        if body is None:
            return self.application(environ, start_response)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        guard = environ["wsgi.input"] = ExactBody(body, _content_length(environ), chunked=chunked)

        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            if guard.broken or guard.unread:  # an unread rest would be read as a request
                close_after(start_response)
            return start_response(status, headers, exc_info)

        return self.application(environ, start)


def close_after(start_response: Callable) -> None:
    """Have the server answer `Connection: close` and close the connection after this
    answer: it will (what is left of the body never arrives, or stalls), and a kept-alive
    answer would say otherwise. WSGI gives an application no say over `Connection`; under
    gunicorn, `start_response` is its response's method, whose `must_close` decides."""
    response = getattr(start_response, "__self__", None)
    if hasattr(response, "must_close"):
        response.must_close = True
