"""Resumable upload sessions: create, send chunks, status, resume, delete.

A chunk is a PATCH here, or a POST to the comprehensive endpoint with `Upload-Token`.
"""

from __future__ import annotations

import hashlib

import msgspec
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from apps.core.api import (
    AsciiIntegerField,
    TenantApiView,
    idempotent_response,
    problem_responses,
)
from apps.ingestions.apis._chunks import chunk_response
from apps.ingestions.apis.examples import SESSION_REQUEST
from apps.ingestions.apis.serializers import (
    SessionOrUploadSerializer,
    SessionOutputSerializer,
    UploadOutputSerializer,
    session_data,
)
from apps.ingestions.engine import RECORDS
from apps.ingestions.services import (
    Answer,
    filename_clean,
    idempotent,
    request_fingerprint,
    session_create,
    session_lookup,
    session_resume,
    session_terminate,
)

_CHUNK_PARAMS = [
    OpenApiParameter(
        "Upload-Offset", int, OpenApiParameter.HEADER, required=True, description="chunk start"
    ),
]
_CHUNK_RESPONSES = {
    200: OpenApiResponse(
        SessionOrUploadSerializer,
        "chunk stored and the file unfinished: the session; or the file complete and its "
        "bytes received before: the earlier upload",
    ),
    202: OpenApiResponse(UploadOutputSerializer, "the last chunk: the upload is queued"),
    **problem_responses(400, 401, 404, 409, 410, 422, 429),
}


class SessionCreateApi(TenantApiView):
    class InputSerializer(serializers.Serializer):
        filename = serializers.CharField(max_length=4096)  # stored at most 255 long
        size = AsciiIntegerField(min_value=1)
        sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False, allow_blank=True)
        type = serializers.ChoiceField(choices=list(RECORDS), required=False, allow_blank=True)
        strict = serializers.BooleanField(required=False, default=False)
        dry_run = serializers.BooleanField(required=False, default=False)

        def validate_filename(self, value: str) -> str:
            return filename_clean(value)

    @extend_schema(
        operation_id="sessions_create",
        summary="Start a resumable upload session",
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="the same key and body give back the same session for 24 h",
            ),
        ],
        request=InputSerializer,
        examples=[SESSION_REQUEST],
        responses={201: SessionOutputSerializer, **problem_responses(400, 401, 409, 413, 422)},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        # `dry_run` counts only when set: a real session's fingerprint is what it was before
        # the option existed, so a key stored then still matches its retry.
        fingerprinted = {k: v for k, v in values.items() if k != "dry_run" or v}
        fingerprint = request_fingerprint(
            method=request.method,
            path=request.path,
            sha256=hashlib.sha256(msgspec.json.encode(fingerprinted, order="sorted")).hexdigest(),
            params={},
        )

        def run() -> tuple[Answer, str]:
            session = session_create(
                tenant=self.tenant,
                filename=values["filename"],
                size=values["size"],
                sha256=values.get("sha256") or "",
                record_type=values.get("type") or "",
                strict=values["strict"],
                dry_run=values["dry_run"],
            )
            body = session_data(session, request)
            headers = {"Location": body["url"], "Upload-Offset": "0"}
            answer = Answer(status_code=status.HTTP_201_CREATED, body=body, headers=headers)
            return answer, fingerprint

        answer, replayed = idempotent(
            tenant=self.tenant,
            key=request.headers.get("Idempotency-Key"),
            run=run,
            fingerprint_of=lambda: fingerprint,
            together=True,  # the session and its key's answer commit as one
        )
        return idempotent_response(answer, replayed=replayed)


class SessionDetailApi(TenantApiView):
    """The session (GET), a chunk of it (PATCH), or forget it and its bytes (DELETE)."""

    streams_body = True  # a chunk, chunked too, streams into storage as it arrives

    @extend_schema(
        operation_id="sessions_retrieve",
        summary="Get a resumable upload session",
        description="The session: its offset, state and, once its file is complete, its upload.",
        responses={200: SessionOutputSerializer, **problem_responses(401, 404)},
    )
    def get(self, request, token):
        return Response(session_data(session_lookup(tenant=self.tenant, token=token), request))

    @extend_schema(
        operation_id="sessions_chunk",
        summary="Send a chunk of a session's file",
        description="The bytes from `Upload-Offset` on. The chunk that completes the file "
        "answers the upload (202, or 200 with the earlier upload of identical bytes).",
        parameters=_CHUNK_PARAMS,
        request={"application/offset+octet-stream": OpenApiTypes.BINARY},
        responses=_CHUNK_RESPONSES,
    )
    def patch(self, request, token):
        return chunk_response(request, tenant=self.tenant, token=token)

    @extend_schema(
        operation_id="sessions_destroy",
        summary="Cancel a session and forget its bytes",
        description="The session and the bytes it holds; an upload it already produced stays. "
        "409 while a chunk of it is being received.",
        responses={204: None, **problem_responses(401, 404, 409)},
    )
    def delete(self, request, token):
        session_terminate(tenant=self.tenant, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionStatusApi(TenantApiView):
    @extend_schema(
        operation_id="sessions_status",
        summary="Get a session's offset (where to resume)",
        responses={200: SessionOutputSerializer, **problem_responses(401, 404)},
    )
    def get(self, request, token):
        session = session_lookup(tenant=self.tenant, token=token)
        return Response(
            session_data(session, request), headers={"Upload-Offset": str(session.offset)}
        )


class SessionResumeApi(TenantApiView):
    @extend_schema(
        operation_id="sessions_resume",
        summary="Resume a session",
        request=None,
        responses={
            200: OpenApiResponse(SessionOutputSerializer, "send the rest from `offset`"),
            202: OpenApiResponse(SessionOutputSerializer, "the failed processing runs again"),
            **problem_responses(401, 404, 409, 410),
        },
    )
    def post(self, request, token):
        outcome = session_resume(tenant=self.tenant, token=token)
        return Response(
            session_data(outcome.session, request),
            status=status.HTTP_202_ACCEPTED if outcome.requeued else status.HTTP_200_OK,
            headers={"Upload-Offset": str(outcome.session.offset)},
        )
