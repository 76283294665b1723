"""The record contract: each type's JSON Schema (2020-12), for anyone (no key, no quota)."""

from __future__ import annotations

import hashlib
import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api import problem_responses
from apps.core.errors import NotFoundError
from apps.ingestions.engine import RECORDS, record_schema

CONTRACT_URL = "/api/v1/contract/{type}/"  # as main/urls.py routes it (docs/contract.md)
# For the operations that take records: where their rows' contract is.
CONTRACT_NOTE = (
    "Each row must meet its type's contract: the JSON Schema at `GET /api/v1/contract/{type}/` "
    "(no key; field tables in docs/contract.md). A row that does not is a reject."
)
# The schemas change only with a deployment: a client may keep one an hour, then revalidate.
_CACHE_CONTROL = "public, max-age=3600"


class SchemaJSONRenderer(JSONRenderer):
    """JSON Schema's own media type; `Accept: application/json` gets plain JSON."""

    media_type = "application/schema+json"


class _PublicApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []  # nothing to count a request against: no key
    renderer_classes = [SchemaJSONRenderer, JSONRenderer]


class ContractListApi(_PublicApi):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="contract_list",
        summary="List the record types' JSON Schemas",
        tags=["contract"],
        description="The record types and the URL of each one's JSON Schema.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="`{type: url}`")},
    )
    def get(self, request):
        types = {
            name: request.build_absolute_uri(CONTRACT_URL.format(type=name)) for name in RECORDS
        }
        return Response({"types": types}, headers={"Cache-Control": _CACHE_CONTROL})


class ContractDetailApi(_PublicApi):
    @extend_schema(
        operation_id="contract_retrieve",
        summary="Get a record type's JSON Schema",
        tags=["contract"],
        description=(
            "The JSON Schema (2020-12) of one record of `record_type`, generated from the "
            "definition the engine validates with: what each field accepts, which are "
            "required, and in `x-rules` what JSON Schema cannot say (with the reject code). "
            "`ETag` and `If-None-Match` (304) for caches. Field tables: docs/contract.md."
        ),
        parameters=[
            OpenApiParameter(
                "record_type",
                str,
                OpenApiParameter.PATH,
                enum=list(RECORDS),
                description="the record type",
            ),
            OpenApiParameter(
                "If-None-Match",
                str,
                OpenApiParameter.HEADER,
                description="the ETag of an earlier answer: 304 while the schema is the same",
            ),
            OpenApiParameter(
                "ETag", str, OpenApiParameter.HEADER, response=[200, 304], description="version"
            ),
            OpenApiParameter("Cache-Control", str, OpenApiParameter.HEADER, response=[200, 304]),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="a JSON Schema document"),
            304: OpenApiResponse(description="unchanged since the ETag sent in If-None-Match"),
            **problem_responses(400, 404),  # 400: a header with control characters
        },
    )
    def get(self, request, record_type: str):
        if record_type not in RECORDS:
            raise NotFoundError(
                f"No record type {record_type[:64]!r}; the types are {', '.join(RECORDS)}.",
                code="unknown_type",
                extra={"types": list(RECORDS)},
            )
        schema = {"$id": request.build_absolute_uri(request.path), **record_schema(record_type)}
        text = json.dumps(schema, sort_keys=True).encode()
        headers = {"ETag": f'"{hashlib.sha256(text).hexdigest()[:32]}"'}
        headers["Cache-Control"] = _CACHE_CONTROL
        if _matches(request.headers.get("If-None-Match", ""), headers["ETag"]):
            return Response(status=304, headers=headers)
        return Response(schema, headers=headers)


def _matches(header: str, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (compared weakly, as RFC 9110 13.1.2
    has a GET do) or is "*"."""
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags
