"""The rejected rows of an upload or a batch, as their errors endpoints answer them.

One shape for both: `?code=` filters (an unknown code is a 400 that lists the codes), JSON
is paginated, and `?format=ndjson` or `Accept: application/x-ndjson` streams every reject,
one object a line. A reject's `errors` lists every problem of its row (`reject_errors`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from email.utils import format_datetime

import msgspec
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer

from apps.core.api import PAGE_PARAMETERS, Pagination, choice_param, query_params
from apps.ingestions.presenters import REJECT_CODES, reject_errors

__all__ = ["REJECT_CODES"]  # the codes, for the admin's filter too


class NDJSONRenderer(BaseRenderer):
    media_type = "application/x-ndjson"
    format = "ndjson"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else msgspec.json.encode(data) + b"\n"


ERRORS_RENDERERS = [JSONRenderer, NDJSONRenderer]


def reject_output(reject: dict) -> dict:
    """A stored reject ({line, field, code, message, raw, maybe errors}) as it is answered."""
    return {
        "line": reject["line"],
        "field": reject["field"],
        "code": reject["code"],
        "message": reject["message"],
        "errors": reject_errors(reject),
        "raw": reject["raw"],
    }


class RejectFilterSerializer(serializers.Serializer):
    code = choice_param(REJECT_CODES)


ERRORS_PARAMETERS = [  # for extend_schema
    RejectFilterSerializer,
    *PAGE_PARAMETERS,
    OpenApiParameter("format", str, enum=["json", "ndjson"]),
]


def reject_filters(request) -> dict:
    """The errors list's query parameters, validated (400 on an unknown `code`)."""
    return query_params(RejectFilterSerializer, request)


def rejects_response(request, view, rejects: QuerySet | Iterable[dict], *, modified: datetime):
    """`rejects` ({line, field, code, message, raw, errors}, in order) as the view's
    negotiated renderer asks: a page of JSON, or all of them streamed as NDJSON."""
    if request.accepted_renderer.format == "ndjson":
        encode = msgspec.json.encode
        rows = rejects.iterator(chunk_size=2000) if isinstance(rejects, QuerySet) else rejects
        response = StreamingHttpResponse(
            (encode(reject_output(r)) + b"\n" for r in rows), content_type="application/x-ndjson"
        )
        response["Last-Modified"] = format_datetime(modified, usegmt=True)
        return response
    paginator = Pagination()
    page = paginator.paginate_queryset(rejects, request, view=view)
    return paginator.get_paginated_response([reject_output(r) for r in page])
