"""Header and body helpers of the ingestion API, shared by its view modules.

What a client writes in a header, a query parameter or a form is read here, once, and
refused with a 400 when it cannot be stored or is no number; the body is read as a stream.
"""

from __future__ import annotations

from email.message import Message

from apps.core.api import ascii_int
from apps.core.errors import ApplicationError
from apps.core.wsgi import read_at_most
from apps.ingestions.services import filename_clean


def disposition_filename(header: str) -> str:
    """The file name of a Content-Disposition header, `filename*=UTF-8''...` (RFC 8187)
    decoded."""
    if not header:
        return ""
    message = Message()
    message["Content-Disposition"] = header
    return filename_clean(message.get_filename() or "")


def int_header(request, name: str, *, code: str = "bad_header") -> int | None:
    """A header that must be a non-negative integer (ASCII digits, see `ascii_int`);
    None when absent or empty."""
    raw = request.headers.get(name)
    if raw is None or not raw.strip():
        return None
    value = ascii_int(raw.strip())
    if value is None:
        raise ApplicationError(
            f"{name} must be a non-negative integer (ASCII digits, at most 18), not "
            f"{header_text(raw)!r}.",
            code=code,
        )
    return value


def header_text(raw: str) -> str:
    """A header's value as the client wrote it: WSGI hands headers over as Latin-1, so
    UTF-8 bytes (a non-ASCII digit) arrive as two or three Latin-1 characters each."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def is_chunked(request) -> bool:
    """Whether the body comes chunked (transfer codings are case-insensitive: `Chunked`)."""
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def raw_body(request):
    """The request body as a stream. A chunked body has no Content-Length: Django would
    read nothing, so read the server's (already de-chunked) input to its end instead."""
    django_request = request._request
    if not request.META.get("CONTENT_LENGTH") and is_chunked(request):
        return django_request.META["wsgi.input"]
    return django_request


def read_whole_body(request, *, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit`."""
    body = read_at_most(raw_body(request), limit)
    return None if len(body) > limit else body
