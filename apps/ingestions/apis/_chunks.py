"""A session's chunk, answered: shared by the session PATCH and an `Upload-Token` POST."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response

from apps.core.errors import ApplicationError
from apps.ingestions.apis._http import int_header, raw_body
from apps.ingestions.apis.serializers import session_data, upload_data
from apps.ingestions.services import session_append

CHUNK_CONTENT_TYPES = ("application/offset+octet-stream", "application/octet-stream")


def _offset_header(request) -> int:
    offset = int_header(request, "Upload-Offset", code="bad_offset")
    if offset is None:
        raise ApplicationError(
            "Send the Upload-Offset header: where the chunk starts.", code="no_offset"
        )
    return offset


def chunk_response(request, *, tenant, token: str) -> Response:
    """Store one chunk of a session. An unfinished file answers 200 with the session; the
    chunk that completes it answers 202 with the new upload (200 with the earlier upload
    when the same bytes were received before). `Upload-Offset` always tells the offset."""
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type not in CHUNK_CONTENT_TYPES:
        raise ApplicationError(
            "Send a chunk as raw bytes: Content-Type application/offset+octet-stream "
            "or application/octet-stream.",
            code="bad_chunk_type",
        )
    outcome = session_append(
        tenant=tenant,
        token=token,
        offset=_offset_header(request),
        stream=raw_body(request),
        content_length=int_header(request, "Content-Length"),
    )
    headers = {"Upload-Offset": str(outcome.session.offset)}
    if outcome.upload is None:
        return Response(session_data(outcome.session, request), headers=headers)
    body = upload_data(outcome.upload.upload, request)
    code = status.HTTP_202_ACCEPTED if outcome.upload.created else status.HTTP_200_OK
    return Response(body, status=code, headers={**headers, "Location": body["url"]})
