"""API plumbing shared by every app: problem+json errors, the tenant-scoped base view,
pagination and throttles."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import JsonResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView, exception_handler

from apps.core.errors import ApplicationError
from apps.core.logs import bound_ids
from apps.core.ratelimit import api_key_window, limit_redis_url, parse_rate, rate_limit_hit

if TYPE_CHECKING:
    from apps.core.idempotency import Answer

PROBLEM_JSON = "application/problem+json"


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, as every error is answered."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="machine-readable error code")
    request_id = serializers.CharField(
        required=False, help_text="the request's X-Request-Id, as in the server's log lines"
    )


def problem_responses(*statuses: int) -> dict:
    """extend_schema `responses` entries: the given statuses as problem+json."""
    return {(code, PROBLEM_JSON): ProblemSerializer for code in statuses}


class ProblemJSONRenderer(JSONRenderer):
    media_type = PROBLEM_JSON


def problem(status_code: int, title: str, detail: str, code: str, **extra: Any) -> dict:
    """An RFC 9457 problem document (`type` stays about:blank; `code` is ours), with the
    request's id (`X-Request-Id`, bound for the request by `AccessMiddleware`), so a
    client's report of an error finds the server's log lines."""
    document = {
        "type": "about:blank",
        "title": title,
        "status": status_code,
        "detail": detail,
        "code": code,
        **extra,
    }
    request_id = bound_ids().get("request_id")
    if request_id is not None:
        document["request_id"] = request_id
    return document


def _problem_response(body: dict, headers: dict | None = None) -> Response:
    response = Response(body, status=body["status"], headers=headers)
    response.content_type = PROBLEM_JSON
    return response


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every error as application/problem+json with a clear detail."""
    if isinstance(exc, ApplicationError):
        return _problem_response(
            problem(exc.status, exc.title, exc.detail, exc.code, **exc.extra), exc.headers
        )
    response = exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handler below answers
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    if detail is None:
        detail = _flatten(response.data)
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    title = {
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        406: "Not acceptable",
        413: "Payload too large",
        415: "Unsupported media type",
        429: "Too many requests",
    }.get(response.status_code, "Bad request" if response.status_code < 500 else "Server error")
    extra = {}
    if isinstance(exc, exceptions.ValidationError) and isinstance(response.data, dict):
        extra["errors"] = _plain(response.data)  # plain str: any renderer can write it
    body = problem(response.status_code, title, str(detail), code, **extra)
    headers = {
        k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate", "Allow")
    }
    return _problem_response(body, headers)


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return str(data)


def _flatten(data: Any) -> str:
    if isinstance(data, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in data.items())
    if isinstance(data, list):
        return "; ".join(_flatten(v) for v in data)
    return str(data)


def json_not_found(request, exception=None) -> JsonResponse:
    return JsonResponse(
        problem(404, "Not found", f"No resource at {request.path}.", "not_found"),
        status=404,
        content_type=PROBLEM_JSON,
    )


def json_server_error(request) -> JsonResponse:
    return JsonResponse(
        problem(500, "Server error", "The server failed to handle this request.", "server_error"),
        status=500,
        content_type=PROBLEM_JSON,
    )


class KeyRateThrottle(BaseThrottle):
    """API_RATE_LIMIT per API key (its public prefix, never the secret), counted atomically
    by apps.core.ratelimit. Throttles run after authentication, so a wrong key is a cheap
    401 and spends nothing of the real key's quota; the outcome is kept on the request for
    the RateLimit-* headers (TenantApiView.finalize_response)."""

    def allow_request(self, request, view) -> bool:
        raw = request.META.get("HTTP_X_API_KEY", "").strip()
        parts = raw.split("_", 2)
        if request.auth is None or len(parts) < 3:
            return True  # not a keyed request: nothing to count it against
        state = getattr(request, "rate_limit_counted", None)  # by the key's lookup
        if state is None:
            state = rate_limit_hit(
                key=api_key_window(parts[1]),
                rate=parse_rate(settings.API_RATE_LIMIT),
                redis_url=limit_redis_url(),
            )
        if state is None:
            return True  # the store is unreachable (logged): let it through
        request.rate_limit = state
        self._wait = state.reset
        return state.allowed

    def wait(self) -> float:
        return self._wait


_DIGITS = re.compile(r"[0-9]{1,18}")  # 18 digits always fit a bigint


def ascii_int(text: str) -> int | None:
    """The one reading of a number a client wrote (a header, a query parameter): ASCII
    digits only, at most 18 of them, else None. `'²'.isdigit()` is True (and int() then
    fails), and int() reads '٣' as 3 and '1_0' as 10."""
    return int(text) if _DIGITS.fullmatch(text) else None


class AsciiIntegerField(serializers.IntegerField):
    """An integer as a JSON number, or as a string of ASCII digits (DRF's own field reads
    the string '٣' as 3)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and ascii_int(data.strip().removeprefix("-")) is None:
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonBooleanField(serializers.BooleanField):
    """A JSON `true` or `false`, nothing else (DRF's own field also takes "yes", "off", 1
    and "0", which a JSON body has no reason to send)."""

    def to_internal_value(self, data):
        if data is True or data is False:
            return data
        self.fail("invalid", input=data)


def single_value(params, name: str) -> str | None:
    """A query parameter or form field (of a QueryDict) that takes one value: None when
    absent, 400 when given twice (which of the two was meant is anyone's guess)."""
    values = params.getlist(name)
    if len(values) > 1:
        raise exceptions.ValidationError({name: [f"Give {name} once, not {len(values)} times."]})
    return values[0] if values else None


def query_params(serializer_class: type[serializers.Serializer], request) -> dict:
    """The query parameters `serializer_class` declares, validated: an unknown value is a
    400 that names the parameter and the values it takes (see `choice_param`)."""
    fields = serializer_class().fields
    values = {name: single_value(request.query_params, name) for name in fields}
    data = {name: value for name, value in values.items() if value is not None}
    params = serializer_class(data=data)
    params.is_valid(raise_exception=True)
    return params.validated_data


def choice_param(choices, **kwargs) -> serializers.ChoiceField:
    """An optional query parameter with a fixed set of values; its 400 lists them."""
    choices = list(choices)
    message = f'"{{input}}" is not one of: {", ".join(choices)}.'
    return serializers.ChoiceField(
        choices=choices, required=False, error_messages={"invalid_choice": message}, **kwargs
    )


class Pagination(LimitOffsetPagination):
    """`limit` (1 to 1000, default 50) and `offset`; anything else given for them is a 400,
    not quietly the default."""

    default_limit = 50
    max_limit = 1000

    def get_limit(self, request) -> int:
        return self._number(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request) -> int:
        return self._number(request, self.offset_query_param, 0, 0, None)

    def get_paginated_response(self, data):
        """The page, and its neighbours in a `Link` header too (RFC 8288), as the body's
        `next` and `previous` name them."""
        response = super().get_paginated_response(data)
        links = [
            f'<{url}>; rel="{rel}"'
            for url, rel in ((self.get_next_link(), "next"), (self.get_previous_link(), "prev"))
            if url is not None
        ]
        if links:
            response["Link"] = ", ".join(links)
        return response

    def get_paginated_response_schema(self, schema):
        """DRF's, with examples of this API's own (a page of 2 of 5)."""
        paginated = super().get_paginated_response_schema(schema)
        example = "https://ingest.example.com/api/v1/ingest/uploads/?limit=2&offset={}"
        properties = paginated["properties"]
        properties["count"]["example"] = 5
        properties["next"]["example"] = example.format(4)
        properties["previous"]["example"] = example.format(0)
        return paginated

    def _number(self, request, name: str, default: int, low: int, high: int | None) -> int:
        raw = single_value(request.query_params, name)
        if raw is None:
            return default
        value = ascii_int(raw)
        if value is None or value < low or (high is not None and value > high):
            wanted = (
                f"an integer from {low} to {high}"
                if high
                else "a non-negative integer of at most 18 digits"
            )
            raise exceptions.ValidationError({name: [f"Must be {wanted}, not {raw!r}."]})
        return value


PAGE_PARAMETERS = [  # Pagination's query parameters, for extend_schema
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": Pagination.max_limit},
        description=f"rows per page (default {Pagination.default_limit})",
    ),
    OpenApiParameter("offset", {"type": "integer", "minimum": 0}, description="rows to skip"),
]


# Authenticated by X-API-Key; `request.auth` is the tenant. (A comment, not a docstring:
# drf-spectacular would show a docstring as the description of every subclass without one.)
class TenantApiView(APIView):
    throttle_classes = [KeyRateThrottle]

    @property
    def tenant(self):
        return self.request.auth

    def initial(self, request, *args, **kwargs):
        """DRF's, with the key and the rate limit before content negotiation: a request
        without a valid key is a 401, and one past its key's limit a 429 (counted, with its
        RateLimit headers), whatever it asks to be answered in. DRF negotiates first: an
        `Accept` or `?format=` it cannot serve was a 406 or 404 before either."""
        self.format_kwarg = self.get_format_suffix(**kwargs)
        try:
            self.perform_authentication(request)
            self.check_permissions(request)
            self.check_throttles(request)
        except Exception:
            # the error's answer still needs a renderer (DRF's handling of an uncaught one,
            # the database unavailable, reads it): the first, as DRF's own fallback
            request.accepted_renderer, request.accepted_media_type = (
                self.perform_content_negotiation(request, force=True)
            )
            raise
        request.accepted_renderer, request.accepted_media_type = self.perform_content_negotiation(
            request
        )
        request.version, request.versioning_scheme = self.determine_version(
            request, *args, **kwargs
        )

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        state = getattr(request, "rate_limit", None)  # set by KeyRateThrottle
        if state is not None:
            for name, value in state.headers.items():
                response[name] = value
        return response


__all__ = [
    "PAGE_PARAMETERS",
    "AsciiIntegerField",
    "Pagination",
    "TenantApiView",
    "ascii_int",
    "choice_param",
    "problem",
    "query_params",
    "single_value",
    "status",
]


def idempotent_response(answer: Answer, *, replayed: bool) -> Response:
    """The answer of `idempotent`: as it was first given, marked when it is a replay."""
    headers = {**answer.headers, **({"Idempotent-Replayed": "true"} if replayed else {})}
    return Response(answer.body, status=answer.status_code, headers=headers)
