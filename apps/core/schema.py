"""OpenAPI details drf-spectacular cannot infer: response headers, added after generation."""

from __future__ import annotations

import copy

_HEADER = {"schema": {"type": "string"}}
_UPLOAD_OPERATIONS = {"ingest_comprehensive", "ingest_orders_legacy"}
_OFFSET_OPERATIONS = {
    "ingest_comprehensive",
    "sessions_create",
    "sessions_chunk",
    "sessions_status",
    "sessions_resume",
    "tus_create",
    "tus_patch",
}


def _header(description: str) -> dict:
    return {**_HEADER, "description": description}


# Answered before the API key is looked at (a missing or wrong key; tus's version check):
# these carry no rate-limit headers, every other answer of a keyed operation does.
_UNLIMITED_STATUSES = {"401", "412"}
_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": {
        "schema": {"type": "integer"},
        "description": "requests allowed per window for this API key (API_RATE_LIMIT)",
    },
    "RateLimit-Remaining": {
        "schema": {"type": "integer"},
        "description": "requests left in the current window",
    },
    "RateLimit-Reset": {
        "schema": {"type": "integer"},
        "description": "seconds until the current window ends and the quota is whole again",
    },
    "RateLimit-Policy": _header("`<limit>;w=<window seconds>`: the quota and its fixed window"),
}


def _is_keyed(operation: dict) -> bool:
    if any("ApiKey" in scheme for scheme in operation.get("security", [])):
        return True
    return any(
        p.get("in") == "header" and p.get("name") == "X-API-Key"
        for p in operation.get("parameters", [])
    )


def _is_paginated(operation: dict) -> bool:
    return any(p.get("name") == "offset" for p in operation.get("parameters", []))


def add_response_headers(result, generator, request, public):
    has_problem = "Problem" in result.get("components", {}).get("schemas", {})
    for path, operations in result.get("paths", {}).items():
        if path.startswith("/api/v1/ingest/tus/{") and "patch" in operations:
            operations["head"] = _tus_head(operations["patch"])
        for operation in operations.values():
            operation_id = operation.get("operationId", "")
            keyed = _is_keyed(operation)
            responses = operation.setdefault("responses", {})
            if has_problem:
                # Any request may be malformed where the server reads it (a Content-Length
                # that is not a number, a header it refuses), whatever the view lists.
                responses.setdefault("400", copy.deepcopy(_BAD_REQUEST))
            if keyed and has_problem:
                # Any keyed request may be over its key's rate, whatever the view lists.
                responses.setdefault("429", copy.deepcopy(_TOO_MANY_REQUESTS))
            paginated = _is_paginated(operation)
            for status, response in responses.items():
                headers = response.setdefault("headers", {})
                headers["X-Request-Id"] = _REQUEST_ID
                if paginated and status == "200":
                    headers["Link"] = _header(
                        'the neighbouring pages, rel="next" and rel="prev" (RFC 8288), as the '
                        "body's next and previous"
                    )
                if keyed and status not in _UNLIMITED_STATUSES:
                    headers.update(copy.deepcopy(_RATE_LIMIT_HEADERS))
                if status == "429":
                    headers["Retry-After"] = _header("seconds to wait before retrying")
                if operation_id in _UPLOAD_OPERATIONS and status in ("200", "202"):
                    headers["Location"] = _header("the upload's status URL")
                    headers["Idempotent-Replayed"] = _header(
                        "`true` when this is the stored answer to an earlier request with "
                        "the same Idempotency-Key"
                    )
                if operation_id == "ingest_orders_legacy":
                    headers["Deprecation"] = _header("RFC 9745: this endpoint is deprecated")
                    headers["Link"] = _header('the successor endpoint, rel="successor-version"')
                if operation_id in _OFFSET_OPERATIONS and status in _OFFSET_STATUSES:
                    headers["Upload-Offset"] = _header("bytes of the file received so far")
                if operation_id.startswith("tus_"):
                    headers["Tus-Resumable"] = _header("1.0.0")
                    if status in ("200", "201", "204"):
                        headers["Upload-Expires"] = _header("when an unfinished upload expires")
                if not headers:
                    del response["headers"]
    return result


_OFFSET_STATUSES = {"200", "201", "202", "204", "409"}
_REQUEST_ID = _header(
    "the request's id: the client's own X-Request-Id when sane (1 to 128 of A-Z a-z 0-9 . _ "
    ": -), else a new UUID; in the server's log lines and in a problem's request_id"
)
_BAD_REQUEST = {
    "description": "a malformed request",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_TOO_MANY_REQUESTS = {
    "description": "over the API key's request rate (API_RATE_LIMIT)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _tus_head(patch: dict) -> dict:
    """drf-spectacular leaves HEAD out; tus needs it to tell a client where to resume."""
    return {
        "operationId": "tus_head",
        "description": "The upload's offset and length, to resume from.",
        "tags": patch.get("tags", []),
        "security": patch.get("security", []),
        "parameters": [p for p in patch.get("parameters", []) if p.get("name") != "Upload-Offset"],
        "responses": {
            "200": {
                "description": "Upload-Offset and Upload-Length tell how far the upload is",
                "headers": {
                    "Upload-Offset": _header("bytes received so far"),
                    "Upload-Length": _header("the file's size"),
                    "Upload-Metadata": _header("as sent when the upload was created"),
                    "Upload-Expires": _header("when an unfinished upload expires"),
                    "Tus-Resumable": _header("1.0.0"),
                },
            },
            **{
                code: response
                for code, response in patch.get("responses", {}).items()
                if code in ("401", "404", "410", "412", "429")
            },
        },
    }
