"""Live records: accept a batch (one type, or mixed), list batches, show one, its rejects."""

from __future__ import annotations

import codecs
import hashlib

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from apps.core.api import (
    PAGE_PARAMETERS,
    Pagination,
    TenantApiView,
    choice_param,
    idempotent_response,
    problem_responses,
    query_params,
)
from apps.core.errors import PayloadTooLargeError, UnknownRecordTypeError
from apps.ingestions.apis._http import int_header, read_whole_body
from apps.ingestions.apis._rejects import (
    ERRORS_PARAMETERS,
    ERRORS_RENDERERS,
    reject_filters,
    rejects_response,
)
from apps.ingestions.apis.contract import CONTRACT_NOTE
from apps.ingestions.apis.examples import MIXED_REQUEST, RECORDS_ACCEPTED, RECORDS_REQUEST
from apps.ingestions.engine import RECORDS, decompress_prefix
from apps.ingestions.models import MIXED, BatchState
from apps.ingestions.presenters import (
    BatchListOutputSerializer,
    BatchOutputSerializer,
    RejectOutputSerializer,
    batch_data,
)
from apps.ingestions.selectors import (
    record_batch_get,
    record_batch_list,
    record_batch_rejects,
)
from apps.ingestions.services import (
    Answer,
    idempotent,
    record_batch_accept,
    request_fingerprint,
)

_READ_RESPONSES = problem_responses(401, 404, 429)


_CREATE_SCHEMA = {
    "parameters": [
        OpenApiParameter(
            "Idempotency-Key", str, OpenApiParameter.HEADER, description="as for uploads"
        ),
    ],
    "request": {
        "application/x-ndjson": OpenApiTypes.BINARY,
        "application/json": OpenApiTypes.OBJECT,
    },
    "responses": {
        202: BatchOutputSerializer,
        **problem_responses(400, 401, 409, 413, 415, 422, 429),
    },
}


class _RecordBatchCreate(TenantApiView):
    """POST a batch of live records: NDJSON or a JSON array; of `type`, or mixed
    (`{"type", "record"}` elements). 202 once it is stored; its rejects in the answer."""

    parser_classes: list = []  # the body is read raw, once
    streams_body = True  # a chunked one too (`RequestBodyMiddleware`)

    @classmethod
    def max_body_bytes(cls) -> int:
        """A longer body is refused (413) before it is read (`RequestBodyMiddleware`)."""
        return settings.LIVE_MAX_BYTES

    def _create(self, request, record_type: str | None) -> Response:
        if record_type is not None and record_type not in RECORDS:
            raise UnknownRecordTypeError(
                f"Unknown type {record_type!r}; expected one of {', '.join(RECORDS)}."
            )
        body = _read_body(request)
        json_array = _is_json_array(request, body)
        key = request.headers.get("Idempotency-Key")

        def run() -> tuple[Answer, str]:
            batch = record_batch_accept(
                tenant=self.tenant, record_type=record_type, body=body, json_array=json_array
            )
            data = batch_data(batch, request)
            answer = Answer(status.HTTP_202_ACCEPTED, data, {"Location": data["url"]})
            # the body's sha256, for a key to store; no key, nothing keeps it
            return answer, fingerprint() if key is not None else ""

        def fingerprint() -> str:
            sha256 = hashlib.sha256(body).hexdigest()
            params = {"format": "json" if json_array else "ndjson"}
            return request_fingerprint(
                method=request.method, path=request.path, sha256=sha256, params=params
            )

        answer, replayed = idempotent(
            tenant=self.tenant,
            key=key,
            run=run,
            fingerprint_of=fingerprint,
            together=True,  # the batch and its key's answer commit as one
        )
        return idempotent_response(answer, replayed=replayed)


class RecordBatchCreateApi(_RecordBatchCreate):
    @extend_schema(
        operation_id="records_create",
        summary="Send live records of one type",
        description="POST a batch of live records of one type: NDJSON or a JSON array. 202 "
        "once it is stored; its rejects in the answer. " + CONTRACT_NOTE,
        examples=[RECORDS_REQUEST, RECORDS_ACCEPTED],
        **_CREATE_SCHEMA,
    )
    def post(self, request, record_type: str):
        return self._create(request, record_type)

    def http_method_not_allowed(self, request, *args, **kwargs):
        # /records/uploads/ is no resource at all: not a 405 saying it takes a POST
        if kwargs.get("record_type") not in RECORDS:
            raise NotFound(f"No resource at {request.path}.")
        return super().http_method_not_allowed(request, *args, **kwargs)

    def options(self, request, *args, **kwargs):
        if kwargs.get("record_type") not in RECORDS:  # nor a description of one
            raise NotFound(f"No resource at {request.path}.")
        return super().options(request, *args, **kwargs)


class RecordBatchCreateMixedApi(_RecordBatchCreate):
    @extend_schema(
        operation_id="records_create_mixed",
        summary="Send live records of mixed types",
        description='POST a batch of live records of mixed types: `{"type", "record"}` '
        "elements, as NDJSON lines or a JSON array. 202 once it is stored; its rejects in the "
        "answer. " + CONTRACT_NOTE,
        examples=[MIXED_REQUEST, RECORDS_ACCEPTED],
        **_CREATE_SCHEMA,
    )
    def post(self, request):
        return self._create(request, None)


def _read_body(request) -> bytes:
    limit = settings.LIVE_MAX_BYTES
    too_large = PayloadTooLargeError(f"The batch is larger than the limit of {limit} bytes.")
    if (int_header(request, "Content-Length") or 0) > limit:
        raise too_large
    body = read_whole_body(request, limit=limit)
    if body is None:
        raise too_large
    return body


def _is_json_array(request, body: bytes) -> bool:
    """`application/json` is an array, `application/x-ndjson` lines; else the body tells
    by its first bytes, decompressed (only those: the body is read whole later)."""
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return True
    if content_type in ("application/x-ndjson", "application/jsonl"):
        return False
    head = decompress_prefix(body[:_SNIFF_BYTES], max_bytes=_SNIFF_BYTES)
    return head.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"["  # past a UTF-8 BOM


_SNIFF_BYTES = 64 << 10  # whitespace before the first bracket, within reason


class RecordBatchListApi(TenantApiView):
    """The tenant's live record batches, newest first (`state` filters): each with its
    counts, not its rejects."""

    pagination_class = Pagination  # documents the paginated answer

    class FilterSerializer(serializers.Serializer):
        state = choice_param(BatchState.values)
        type = choice_param([*RECORDS, MIXED])

    @extend_schema(
        operation_id="record_batches_list",
        summary="List live record batches",
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={
            200: BatchListOutputSerializer(many=True),
            **problem_responses(400, 401, 429),
        },
    )
    def get(self, request):
        filters = query_params(self.FilterSerializer, request)
        batches = record_batch_list(
            tenant=self.tenant, state=filters.get("state"), record_type=filters.get("type")
        )
        batches = batches.defer("rejects", "warnings").prefetch_related("parts")  # not listed
        paginator = Pagination()
        page = paginator.paginate_queryset(batches, request, view=self)
        context = {"request": request}
        return paginator.get_paginated_response(
            BatchListOutputSerializer(page, many=True, context=context).data
        )


class RecordBatchDetailApi(TenantApiView):
    """One live record batch: its state, counts, rejects and warnings at acceptance, and
    the rules versions its records were checked with."""

    @extend_schema(
        operation_id="record_batches_retrieve",
        summary="Get a live record batch",
        responses={200: BatchOutputSerializer, **_READ_RESPONSES},
    )
    def get(self, request, batch_id: int):
        batch = record_batch_get(tenant=self.tenant, batch_id=batch_id)
        if batch is None:
            raise NotFound("No such batch.")
        return Response(batch_data(batch, request))


class RecordBatchErrorsApi(TenantApiView):
    """A batch's rejects, as an upload's: those at acceptance, then the merge's (orphans)."""

    renderer_classes = ERRORS_RENDERERS
    pagination_class = Pagination  # documents the paginated answer

    @extend_schema(
        operation_id="record_batches_errors",
        summary="List a batch's rejected records",
        parameters=[*ERRORS_PARAMETERS],
        responses={
            200: RejectOutputSerializer(many=True),
            **_READ_RESPONSES,
            **problem_responses(400),
        },
    )
    def get(self, request, batch_id: int):
        filters = reject_filters(request)
        batch = record_batch_get(tenant=self.tenant, batch_id=batch_id)
        if batch is None:
            raise NotFound("No such batch.")
        rejects = record_batch_rejects(tenant=self.tenant, batch=batch, code=filters.get("code"))
        return rejects_response(request, self, rejects, modified=batch.updated_at)
