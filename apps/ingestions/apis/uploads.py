"""Uploads: receive a file (comprehensive or legacy endpoint), list them, show one, its rejects."""

from __future__ import annotations

from contextlib import contextmanager

from django.conf import settings
from django.http import QueryDict
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ParseError, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from apps.core.api import (
    PAGE_PARAMETERS,
    Pagination,
    TenantApiView,
    choice_param,
    idempotent_response,
    problem_responses,
    query_params,
    single_value,
)
from apps.core.errors import PayloadTooLargeError
from apps.ingestions.apis._chunks import chunk_response
from apps.ingestions.apis._http import (
    disposition_filename,
    int_header,
    is_chunked,
    raw_body,
)
from apps.ingestions.apis._rejects import (
    ERRORS_PARAMETERS,
    ERRORS_RENDERERS,
    reject_filters,
    rejects_response,
)
from apps.ingestions.apis.contract import CONTRACT_NOTE
from apps.ingestions.apis.examples import REJECT, UPLOAD_FINISHED, UPLOAD_QUEUED
from apps.ingestions.apis.serializers import (
    SessionOrUploadSerializer,
    UploadOutputSerializer,
    upload_data,
)
from apps.ingestions.engine import RECORDS
from apps.ingestions.models import RecordType, UploadState
from apps.ingestions.presenters import RejectOutputSerializer
from apps.ingestions.selectors import reject_list, upload_get, upload_list
from apps.ingestions.services import (
    Answer,
    filename_clean,
    fingerprint,
    idempotent,
    request_fingerprint,
    upload_create,
    upload_receive,
)

_UPLOAD_PARAMS = [
    OpenApiParameter("type", str, enum=list(RECORDS), description="record type (else detected)"),
    OpenApiParameter("strict", bool, description="all-or-nothing"),
    OpenApiParameter(
        "dry_run",
        bool,
        description="process in full and report, then roll back: nothing is loaded",
    ),
    OpenApiParameter("filename", str, description="the file name, for a raw-body upload"),
    OpenApiParameter(
        "Idempotency-Key",
        str,
        OpenApiParameter.HEADER,
        description="replays the first response for 24 h",
    ),
    OpenApiParameter(
        "Upload-Token",
        str,
        OpenApiParameter.HEADER,
        description="the body is a chunk of this resumable session (see sessions_chunk)",
    ),
    OpenApiParameter(
        "Upload-Offset", int, OpenApiParameter.HEADER, description="with Upload-Token"
    ),
]
_UPLOAD_REQUEST = {
    "multipart/form-data": inline_serializer(
        "UploadForm",
        {
            "file": serializers.FileField(),
            "type": serializers.CharField(required=False),
            "strict": serializers.BooleanField(required=False),
            "dry_run": serializers.BooleanField(required=False),
        },
    ),
    "application/octet-stream": OpenApiTypes.BINARY,
    "application/x-ndjson": OpenApiTypes.BINARY,
    "application/offset+octet-stream": OpenApiTypes.BINARY,
}
_UPLOAD_RESPONSES = {
    202: UploadOutputSerializer,
    200: OpenApiResponse(
        SessionOrUploadSerializer,
        "the same bytes were already received: the earlier upload; or, for a chunk of a "
        "session (`Upload-Token`) that leaves its file unfinished, the session",
    ),
    **problem_responses(400, 401, 404, 409, 413, 415, 422, 429),  # 404: no such Upload-Token
}
_READ_RESPONSES = problem_responses(401, 404, 429)


class UploadCreateApi(TenantApiView):
    """POST a file (multipart `file`, or the raw body with its file name)."""

    parser_classes = [MultiPartParser, FormParser]
    streams_body = True  # a raw file, chunked too, streams into storage as it arrives
    allowed_types: frozenset[str] | None = None

    @extend_schema(
        operation_id="ingest_comprehensive",
        summary="Upload an NDJSON file",
        description=f"POST a file (multipart `file`, or the raw body with its file name). "
        f"{CONTRACT_NOTE}",
        parameters=_UPLOAD_PARAMS,
        request=_UPLOAD_REQUEST,
        responses=_UPLOAD_RESPONSES,
        examples=[UPLOAD_QUEUED],
    )
    def post(self, request):
        token = request.headers.get("Upload-Token")
        if token is not None:  # a chunk of a resumable session
            return chunk_response(request, tenant=self.tenant, token=token.strip())
        length = int_header(request, "Content-Length") or 0
        if length > settings.INGEST_MAX_UPLOAD_BYTES:
            raise PayloadTooLargeError(
                f"The request body is {length} bytes; the limit is "
                f"{settings.INGEST_MAX_UPLOAD_BYTES}."
            )
        answer, replayed = idempotent(
            tenant=self.tenant,
            key=request.headers.get("Idempotency-Key"),
            run=lambda: self._create(request),
            fingerprint_of=lambda: self._fingerprint(request),
        )
        return idempotent_response(answer, replayed=replayed)

    def _create(self, request) -> tuple[Answer, str]:
        """Store the file and queue its upload: 202 with it, or 200 with the earlier upload
        of the same bytes; and the request's fingerprint."""
        with self._body(request) as (stream, filename, params):
            upload = {
                "tenant": self.tenant,
                "stream": stream,
                "filename": filename,
                "record_type": params["type"] or None,
                "strict": params["strict"],
                "dry_run": params["dry_run"],
                "allowed_types": self.allowed_types,
            }
            size = _streamed_size(request)
            if size is None:
                outcome = upload_create(**upload)  # stored whole, then queued
            else:
                outcome = upload_receive(size=size, **upload)  # queued at its first bytes
        body = upload_data(outcome.upload, request)
        code = status.HTTP_202_ACCEPTED if outcome.created else status.HTTP_200_OK
        answer = Answer(status_code=code, body=body, headers={"Location": body["url"]})
        return answer, _request_fingerprint(request, outcome.upload.sha256, filename, params)

    def _fingerprint(self, request) -> str:
        """The request's fingerprint without storing anything: its file's sha256 (not its
        multipart framing) and its parameters."""
        with self._body(request) as (stream, filename, params):
            sha256 = fingerprint(stream).sha256
        return _request_fingerprint(request, sha256, filename, params)

    class ParamsSerializer(serializers.Serializer):
        type = serializers.CharField(required=False, allow_blank=True, default="")  # service checks
        strict = serializers.BooleanField(required=False, default=False)
        dry_run = serializers.BooleanField(required=False, default=False)

    @contextmanager
    def _body(self, request):
        """(stream, filename, params) of a multipart or raw-body upload."""
        content_type = request.content_type or ""
        if content_type.startswith("multipart/form-data"):
            files = request.FILES
            if "file" not in files:
                raise ParseError("The multipart body has no `file` field.")
            if len(files.getlist("file")) > 1 or set(files) != {"file"}:
                raise ParseError("Send one file per request, in the `file` field.")
            upload = files["file"]
            try:
                params = self._params(request, request.data)
                yield upload, filename_clean(upload.name or "") or "upload", params
            finally:
                upload.close()
            return
        if content_type.startswith("application/x-www-form-urlencoded"):
            raise ParseError("Send the file as multipart/form-data or as the raw request body.")
        params = self._params(request, QueryDict())
        filename = filename_clean(single_value(request.query_params, "filename") or "")
        filename = filename or disposition_filename(request.headers.get("Content-Disposition", ""))
        if not int_header(request, "Content-Length") and not is_chunked(request):
            raise ParseError("The request body is empty: send an NDJSON file.")
        yield raw_body(request), filename or "upload", params

    def _params(self, request, form: QueryDict) -> dict:
        """`type`, `strict` and `dry_run`, from the form or the query; each at most once
        (in both: the same value)."""
        data = {}
        for name in ("type", "strict", "dry_run"):
            in_form, in_query = single_value(form, name), single_value(request.query_params, name)
            if None not in (in_form, in_query) and in_form.strip() != in_query.strip():
                # which one was meant is anyone's guess (the form's was taken, silently)
                detail = f"Give {name} once: the query says {in_query!r}, the form {in_form!r}."
                raise ValidationError({name: [detail]})
            value = in_query if in_form is None else in_form
            if value is not None:
                data[name] = value.strip()
        params = self.ParamsSerializer(data=data)
        params.is_valid(raise_exception=True)
        return dict(params.validated_data)


def _streamed_size(request) -> int | None:
    """The Content-Length of a raw body processed while it arrives: one that streams into
    PostgreSQL (larger than WEB_BUFFER_BODY_BYTES), with INGEST_PROCESS_WHILE_RECEIVING on.
    None for any other (a multipart form is parsed whole before the view runs)."""
    if not settings.INGEST_PROCESS_WHILE_RECEIVING:
        return None
    if (request.content_type or "").startswith("multipart/form-data"):
        return None
    length = int_header(request, "Content-Length")
    return length if length is not None and length > settings.WEB_BUFFER_BODY_BYTES else None


def _request_fingerprint(request, sha256: str, filename: str, params: dict) -> str:
    # `dry_run` counts only when set: a real upload's fingerprint is what it was before the
    # option existed, so a key stored then still matches its retry.
    params = {k: v for k, v in params.items() if k != "dry_run" or v}
    return request_fingerprint(
        method=request.method,
        path=request.path,
        sha256=sha256,
        params=params | {"filename": filename},
    )


class LegacyOrdersUploadApi(UploadCreateApi):
    """Deprecated: orders and order_items files only; use the comprehensive endpoint."""

    allowed_types = frozenset({RecordType.ORDERS, RecordType.ORDER_ITEMS})
    DEPRECATED_AT = 1767225600  # 2026-01-01T00:00:00Z

    @extend_schema(
        operation_id="ingest_orders_legacy",
        summary="Upload an orders or order_items file (deprecated)",
        deprecated=True,
        description=f"Orders and order_items files only; use ingest_comprehensive. {CONTRACT_NOTE}",
        parameters=_UPLOAD_PARAMS,
        request=_UPLOAD_REQUEST,
        responses=_UPLOAD_RESPONSES,
    )
    def post(self, request):
        return super().post(request)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Deprecation"] = f"@{self.DEPRECATED_AT}"
        successor = request.build_absolute_uri(reverse("ingest-comprehensive"))
        response["Link"] = f'<{successor}>; rel="successor-version"'
        return response


class UploadListApi(TenantApiView):
    pagination_class = Pagination  # documents the paginated answer

    class FilterSerializer(serializers.Serializer):
        state = choice_param(UploadState.values)
        type = choice_param(RECORDS)

    @extend_schema(
        operation_id="uploads_list",
        summary="List uploads",
        parameters=[
            FilterSerializer,
            *PAGE_PARAMETERS,
        ],
        responses={200: UploadOutputSerializer(many=True), **problem_responses(400, 401, 429)},
    )
    def get(self, request):
        filters = query_params(self.FilterSerializer, request)
        uploads = upload_list(
            tenant=self.tenant, state=filters.get("state"), record_type=filters.get("type")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(uploads, request, view=self)
        return paginator.get_paginated_response([upload_data(u, request) for u in page])


class UploadDetailApi(TenantApiView):
    @extend_schema(
        operation_id="uploads_retrieve",
        summary="Get an upload: its state, counts and progress",
        responses={200: UploadOutputSerializer, **_READ_RESPONSES},
        examples=[UPLOAD_FINISHED],
    )
    def get(self, request, upload_id):
        upload = upload_get(tenant=self.tenant, upload_id=upload_id)
        if upload is None:
            raise NotFound("No such upload.")
        return Response(upload_data(upload, request))


class UploadErrorsApi(TenantApiView):
    renderer_classes = ERRORS_RENDERERS
    pagination_class = Pagination  # documents the paginated answer

    @extend_schema(
        operation_id="uploads_errors",
        summary="List an upload's rejected rows",
        parameters=[
            *ERRORS_PARAMETERS,
        ],
        responses={
            200: RejectOutputSerializer(many=True),
            **_READ_RESPONSES,
            **problem_responses(400),
        },
        examples=[REJECT],
    )
    def get(self, request, upload_id):
        filters = reject_filters(request)
        upload = upload_get(tenant=self.tenant, upload_id=upload_id)
        if upload is None:
            raise NotFound("No such upload.")
        rejects = reject_list(tenant=self.tenant, upload=upload, code=filters.get("code")).values(
            "line", "field", "code", "message", "raw", "errors"
        )
        return rejects_response(request, self, rejects, modified=upload.updated_at)
