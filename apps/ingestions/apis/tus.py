"""tus 1.0 resumable uploads, over the same sessions as the session API.

https://tus.io/protocols/resumable-upload: core, creation (with upload), checksum,
termination and expiration. The upload URL's token is a session token. Authentication is
`X-API-Key`, as everywhere; only OPTIONS discovery is open.
"""

from __future__ import annotations

import base64
import binascii
import re

from django.conf import settings
from django.urls import reverse
from django.utils.http import http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.response import Response

from apps.core.api import TenantApiView, problem_responses
from apps.core.errors import ApplicationError, GoneError
from apps.ingestions.apis._http import int_header, is_chunked, raw_body
from apps.ingestions.models import SessionState, UploadSession
from apps.ingestions.services import (
    CHECKSUM_ALGORITHMS,
    ChunkChecksum,
    filename_clean,
    session_append,
    session_create,
    session_lookup,
    session_terminate,
)

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
CHUNK_TYPE = "application/offset+octet-stream"
_TRUE = {"1", "true", "yes", "on"}


class TusVersionError(ApplicationError):
    status = 412
    code = "tus_version"
    title = "Precondition failed"


_METADATA = re.compile(r"[\x20-\x7e]*")  # keys and base64: printable ASCII, echoed by HEAD


def parse_metadata(header: str) -> dict[str, str]:
    """`Upload-Metadata: key base64value,key2 base64value2` (a value may be absent)."""
    if not _METADATA.fullmatch(header):
        raise ApplicationError(
            "Upload-Metadata must be printable ASCII: keys and base64-encoded values.",
            code="bad_metadata",
        )
    metadata = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, encoded = pair.partition(" ")
        try:
            value = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ApplicationError(
                f"Upload-Metadata: the value of {key!r} is not base64-encoded UTF-8.",
                code="bad_metadata",
            ) from None
        metadata[key] = value
    return metadata


def _expiry_headers(session: UploadSession) -> dict[str, str]:
    if session.state != SessionState.OPEN:
        return {}
    return {"Upload-Expires": http_date(session.expires_at.timestamp())}


class _TusApi(TenantApiView):
    """Every answer carries Tus-Resumable; every request but OPTIONS must send it."""

    streams_body = True  # a chunk, chunked too, streams into storage as it arrives

    def initial(self, request, *args, **kwargs):
        if request.method != "OPTIONS":
            version = request.headers.get("Tus-Resumable")
            if version != TUS_VERSION:
                raise TusVersionError(
                    f"This server speaks tus {TUS_VERSION}; send `Tus-Resumable: {TUS_VERSION}`.",
                    headers={"Tus-Version": TUS_VERSION},
                )
        super().initial(request, *args, **kwargs)

    def perform_authentication(self, request):
        if request.method != "OPTIONS":
            super().perform_authentication(request)

    def check_permissions(self, request):
        if request.method != "OPTIONS":
            super().check_permissions(request)

    def check_throttles(self, request):
        if request.method != "OPTIONS":
            super().check_throttles(request)

    @extend_schema(exclude=True)
    def options(self, request, *args, **kwargs):
        return Response(
            status=status.HTTP_204_NO_CONTENT,
            headers={
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": TUS_EXTENSIONS,
                "Tus-Max-Size": str(settings.INGEST_MAX_UPLOAD_BYTES),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            },
        )

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Tus-Resumable"] = TUS_VERSION
        if response.status_code == 460:
            response.reason_phrase = "Checksum Mismatch"
        return response

    def _store(self, request, session: UploadSession, offset: int, checksum) -> UploadSession:
        outcome = session_append(
            tenant=self.tenant,
            token=session.token,
            offset=offset,
            stream=raw_body(request),
            content_length=int_header(request, "Content-Length"),
            checksum=checksum,
            keep_partial=True,  # tus: what arrived is kept, and HEAD tells the client
        )
        return outcome.session


_TUS_HEADERS = [
    OpenApiParameter("Tus-Resumable", str, OpenApiParameter.HEADER, required=True, enum=["1.0.0"]),
]


_MAX_METADATA = UploadSession._meta.get_field("metadata").max_length


class TusCreateApi(_TusApi):
    @extend_schema(
        operation_id="tus_create",
        summary="Create a tus upload",
        parameters=[
            *_TUS_HEADERS,
            OpenApiParameter("Upload-Length", int, OpenApiParameter.HEADER, required=True),
            OpenApiParameter(
                "Upload-Metadata",
                str,
                OpenApiParameter.HEADER,
                description="base64 values: `filename` (required), `type`, `sha256`, `strict`, "
                "`dry_run`",
            ),
        ],
        request={CHUNK_TYPE: OpenApiTypes.BINARY},
        responses={
            201: OpenApiResponse(None, "created; Location is the upload URL"),
            **problem_responses(400, 401, 412, 413, 429),
        },
    )
    def post(self, request):
        if request.headers.get("Upload-Defer-Length"):
            raise ApplicationError(
                "Upload-Defer-Length is not supported: send Upload-Length.", code="defer_length"
            )
        length = int_header(request, "Upload-Length")
        if length is None:
            raise ApplicationError("Send the file's size in Upload-Length.", code="no_length")
        raw_metadata = request.headers.get("Upload-Metadata", "")
        if len(raw_metadata) > _MAX_METADATA:  # kept whole, or HEAD would give it back cut
            raise ApplicationError(
                f"Upload-Metadata is longer than {_MAX_METADATA} characters.",
                code="metadata_too_long",
            )
        metadata = parse_metadata(raw_metadata)
        body_length = int_header(request, "Content-Length") or 0
        with_body = body_length or is_chunked(request)
        if with_body and (request.content_type or "").split(";")[0].strip() != CHUNK_TYPE:
            raise UnsupportedMediaType(request.content_type)  # before a session is made
        record_type = metadata.get("type", "").strip()
        if "/" in record_type:  # a MIME type, as many tus clients send: not ours to use
            record_type = ""
        session = session_create(
            tenant=self.tenant,
            filename=filename_clean(metadata.get("filename") or metadata.get("name") or ""),
            size=length,
            sha256=metadata.get("sha256", ""),
            record_type=record_type,
            strict=metadata.get("strict", "").strip().lower() in _TRUE,
            dry_run=metadata.get("dry_run", "").strip().lower() in _TRUE,
            metadata=raw_metadata,
        )
        headers = {
            "Location": request.build_absolute_uri(
                reverse("tus-upload", kwargs={"token": session.token})
            )
        }
        if with_body:  # creation-with-upload
            try:
                session = self._store(request, session, 0, None)
            except Exception:
                # the error answer carries no Location: nobody could use the session
                session_terminate(tenant=self.tenant, token=session.token)
                raise
            headers["Upload-Offset"] = str(session.offset)
            headers.update(_upload_result(request, session))  # the whole file in one go
        headers.update(_expiry_headers(session))
        return Response(status=status.HTTP_201_CREATED, headers=headers)


def _upload_result(request, session) -> dict[str, str]:
    """`Upload-Result`, the upload's URL, once the session's last byte made one."""
    if session.upload_id is None:
        return {}
    url = reverse("upload-detail", kwargs={"upload_id": session.upload_id})
    return {"Upload-Result": request.build_absolute_uri(url)}


class TusUploadApi(_TusApi):
    def head(  # documented by apps.core.schema (drf-spectacular leaves HEAD out)
        self, request, token
    ):
        session = session_lookup(tenant=self.tenant, token=token)
        if session.state == SessionState.EXPIRED:
            raise GoneError("This upload has expired and its bytes were deleted.", code="expired")
        headers = {
            "Upload-Offset": str(session.offset),
            "Upload-Length": str(session.size),
            "Cache-Control": "no-store",
            **_expiry_headers(session),
        }
        if session.metadata:
            headers["Upload-Metadata"] = session.metadata
        return Response(status=status.HTTP_200_OK, headers=headers)

    @extend_schema(
        operation_id="tus_patch",
        summary="Send bytes of a tus upload",
        parameters=[
            *_TUS_HEADERS,
            OpenApiParameter("Upload-Offset", int, OpenApiParameter.HEADER, required=True),
            OpenApiParameter(
                "Upload-Checksum",
                str,
                OpenApiParameter.HEADER,
                description="`<algorithm> <base64 digest>` of this chunk",
            ),
        ],
        request={CHUNK_TYPE: OpenApiTypes.BINARY},
        responses={
            204: OpenApiResponse(None, "stored; Upload-Offset is the new offset"),
            **problem_responses(400, 401, 404, 409, 410, 412, 415, 422, 460),
        },
    )
    def patch(self, request, token):
        if (request.content_type or "").split(";")[0].strip() != CHUNK_TYPE:
            raise UnsupportedMediaType(
                request.content_type, detail=f"A tus PATCH body must be {CHUNK_TYPE}."
            )
        offset = int_header(request, "Upload-Offset")
        if offset is None:
            raise ApplicationError("Send the chunk's start in Upload-Offset.", code="no_offset")
        checksum_header = request.headers.get("Upload-Checksum")
        checksum = ChunkChecksum.parse(checksum_header) if checksum_header else None
        session = session_lookup(tenant=self.tenant, token=token)
        session = self._store(request, session, offset, checksum)
        headers = {"Upload-Offset": str(session.offset), **_expiry_headers(session)}
        headers.update(_upload_result(request, session))
        return Response(status=status.HTTP_204_NO_CONTENT, headers=headers)

    @extend_schema(
        operation_id="tus_terminate",
        summary="Cancel a tus upload",
        parameters=_TUS_HEADERS,
        responses={204: None, **problem_responses(401, 404, 409, 412)},
    )
    def delete(self, request, token):
        session_terminate(tenant=self.tenant, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
