"""OpenAPI details drf-spectacular cannot infer: response headers, added after generation."""

from __future__ import annotations

_HEADER = {"schema": {"type": "string"}}
_UPLOAD_OPERATIONS = {"ingest_comprehensive", "ingest_orders_legacy"}


def _header(description: str) -> dict:
    return {**_HEADER, "description": description}


def add_response_headers(result, generator, request, public):
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            operation_id = operation.get("operationId", "")
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
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
                if not headers:
                    del response["headers"]
    return result
