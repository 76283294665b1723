"""OpenAPI details drf-spectacular cannot infer: response headers, added after generation."""

from __future__ import annotations

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


def add_response_headers(result, generator, request, public):
    for path, operations in result.get("paths", {}).items():
        if path.startswith("/api/v1/ingest/tus/{") and "patch" in operations:
            operations["head"] = _tus_head(operations["patch"])
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
