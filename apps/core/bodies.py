"""The request body before any view touches the database (`RequestBodyMiddleware`): read
into memory first when small, streamed by its view when large, refused early when its view
says it is too long, and a chunked one read whole for a view that parses it."""

import io
import sys
import threading

from django.conf import settings
from django.http import UnreadablePostError
from django.urls import Resolver404, get_resolver, get_urlconf

from apps.core.middleware import DATABASE_RETRY_AFTER, incomplete_body, problem_answer
from apps.core.wsgi import ExactBody, IncompleteBodyError, read_at_most


class RequestBodyMiddleware:
    """Before any view touches the database: a small body (up to `WEB_BUFFER_BODY_BYTES`) is
    read into memory first, so a slow client holds a greenlet, not a database connection,
    while it sends; a larger body streams into PostgreSQL as it arrives (so it needs its
    connection), and at most `WEB_MAX_STREAMING_BODIES` of those run at once in a web
    process. One more answers 503 with Retry-After, and PostgreSQL's connections stay free
    for everyone else."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.slots = threading.BoundedSemaphore(settings.WEB_MAX_STREAMING_BODIES)

    def __call__(self, request):
        codings = request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if (refused := _coding_refused(request, codings)) is not None:
            return refused
        length = request.META.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in codings
        size = int(length) if length.isascii() and length.isdigit() else None
        # a chunk of a resumable upload streams, so that tus keeps what arrived of a cut one
        chunk = "HTTP_UPLOAD_OFFSET" in request.META
        if chunked and size is None:
            view = _view_class(request)
            limit = getattr(view, "max_body_bytes", None)
            if limit is not None or not getattr(view, "streams_body", False):
                # for a parser (JSON, a form), which Django gives a body only as far as its
                # length; or for a view that takes a bounded one (a live batch): read first,
                # so that a slow client holds no slot a large upload needs
                return self._chunked_read_whole(request, limit and limit())
        if size is not None and size > _SMALL_BODY and size > _view_body_limit(request):
            # its view refuses a body this long (413) without reading it: not read first,
            # nor asked for with `100 Continue` (the connection is closed after the answer)
            return self.get_response(request)
        if size is not None and size <= settings.WEB_BUFFER_BODY_BYTES and not chunk:
            if size:
                try:
                    request.body  # noqa: B018 - read now, before a database connection is taken
                    guard = request.META.get("wsgi.input")
                    if isinstance(guard, ExactBody):
                        guard.require_whole()  # one read cannot see a body cut short
                except (UnreadablePostError, IncompleteBodyError) as exc:
                    return incomplete_body(exc)
            return self.get_response(request)
        if not size and not chunked:
            return self.get_response(request)
        if not self.slots.acquire(blocking=False):  # a body streamed by its view
            response = problem_answer(
                503,
                "Too many uploads are streaming into this server; retry shortly.",
                code="too_many_uploads",
            )
            response["Retry-After"] = str(DATABASE_RETRY_AFTER)
            return response
        try:
            return self.get_response(request)
        finally:
            self.slots.release()

    def _chunked_read_whole(self, request, limit: int | None):
        """A chunked body for a view that does not stream it (`streams_body`), or takes
        at most `limit` bytes: read whole first, up to `limit` or `WEB_BUFFER_BODY_BYTES`,
        and handed on as a body of that length, as if it had come with its Content-Length.
        Past it, 413; past a view's own limit, the view says so (its first bytes and one
        more are handed on). Either way the rest is never read: the connection is closed."""
        most = limit if limit is not None else settings.WEB_BUFFER_BODY_BYTES
        try:
            body = read_at_most(request.META["wsgi.input"], most)
        except (UnreadablePostError, IncompleteBodyError) as exc:
            return incomplete_body(exc)
        if len(body) > most and limit is None:
            return problem_answer(
                413,
                f"A chunked body over {most} bytes is not taken here.",
                code="payload_too_large",
            )
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = io.BytesIO(body)
        return self.get_response(request)


# A body this small is read before its view is asked for a limit (a resolve per request)
_SMALL_BODY = 64 * 1024


def _view_class(request) -> type | None:
    """The class of the request's view (a DRF view's), or None."""
    try:
        match = get_resolver(getattr(request, "urlconf", None) or get_urlconf()).resolve(
            request.path_info
        )
    except Resolver404:
        return None
    return getattr(match.func, "cls", None)


def _view_body_limit(request) -> int:
    """The longest body the request's view takes: its class's `max_body_bytes()`, for a
    view that refuses a longer one before reading it (a live batch); else no limit here."""
    limit = getattr(_view_class(request), "max_body_bytes", None)
    return limit() if limit is not None else sys.maxsize


def _coding_refused(request, codings: str):
    """The answer to a body in a coding the service cannot read, or None."""
    if coding := _unsupported_coding(codings):
        # gunicorn passes a gzip or deflate transfer coding through undecoded: its bytes
        # would be taken for the body's own (a session's chunk stored compressed)
        return problem_answer(
            501,
            f"Transfer-Encoding {coding} is not supported: send the body as it is, or "
            "chunked (a compressed file is sent as the file itself, named .gz or .zst).",
            code="unsupported_transfer_coding",
        )
    content_codings = request.META.get("HTTP_CONTENT_ENCODING", "").lower()
    if coding := _unsupported_coding(content_codings, _CONTENT_CODINGS):
        # its bytes would be taken as they are: a brotli body read as NDJSON lines
        return problem_answer(
            415,
            f"Content-Encoding {coding} is not supported: send the body as it is, or "
            "compressed with gzip or zstd.",
            code="unsupported_content_encoding",
        )
    return None


def _unsupported_coding(codings: str, taken=("chunked", "identity")) -> str:
    """The first coding of a `Transfer-Encoding` (or `Content-Encoding`) value other than
    those `taken` (identity changes nothing), or ""."""
    for coding in codings.split(","):
        if coding.strip() not in ("", *taken):
            return coding.strip()
    return ""


# gzip and zstd bodies are known by their first bytes, with or without the header
_CONTENT_CODINGS = ("identity", "gzip", "x-gzip", "zstd")
