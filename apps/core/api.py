"""API plumbing shared by every app: problem+json errors, the tenant-scoped base view,
pagination and throttles."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView, exception_handler

from apps.core.errors import ApplicationError

PROBLEM_JSON = "application/problem+json"


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, as every error is answered."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="machine-readable error code")


def problem_responses(*statuses: int) -> dict:
    """extend_schema `responses` entries: the given statuses as problem+json."""
    return {(code, PROBLEM_JSON): ProblemSerializer for code in statuses}


class ProblemJSONRenderer(JSONRenderer):
    media_type = PROBLEM_JSON


def problem(status_code: int, title: str, detail: str, code: str, **extra: Any) -> dict:
    """An RFC 9457 problem document (`type` stays about:blank; `code` is ours)."""
    return {
        "type": "about:blank",
        "title": title,
        "status": status_code,
        "detail": detail,
        "code": code,
        **extra,
    }


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
        extra["errors"] = response.data
    body = problem(response.status_code, title, str(detail), code, **extra)
    headers = {
        k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate", "Allow")
    }
    return _problem_response(body, headers)


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


class KeyRateThrottle(SimpleRateThrottle):
    """Requests per API key (the tenant), backed by the configured cache."""

    scope = "api_key"

    def get_cache_key(self, request, view) -> str | None:
        key = request.META.get("HTTP_X_API_KEY")
        if not key:
            return None
        return self.cache_format % {
            "scope": self.scope,
            "ident": key.split("_")[1] if "_" in key else key,
        }


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000


class TenantApiView(APIView):
    """Authenticated by X-API-Key; `request.auth` is the tenant."""

    throttle_classes = [KeyRateThrottle]

    @property
    def tenant(self):
        return self.request.auth


__all__ = ["TenantApiView", "Pagination", "problem", "status"]
