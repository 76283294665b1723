"""Examples in the OpenAPI document for the main operations: answers as the API gives them
(tests/core/test_api_examples.py checks each against its operation's schema)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

_HOST = "https://ingest.example.com/api/v1/ingest"
_UPLOAD_ID = "0b9f4c1e-8d6a-4f7e-9a51-3c2d7e8f1a20"
_UPLOAD_URL = f"{_HOST}/uploads/{_UPLOAD_ID}/"

_NO_ROWS = dict.fromkeys(
    ("total", "inserted", "updated", "unchanged", "rejected", "pending", "duplicates", "warned"), 0
)
_UPLOAD = {
    "id": _UPLOAD_ID,
    "url": _UPLOAD_URL,
    "type": "orders",
    "filename": "orders_2026-12-01.ndjson",
    "state": "queued",
    "strict": False,
    "dry_run": False,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "size_bytes": 1048576,
    "error": None,
    "rows": _NO_ROWS,
    "progress": {"bytes_done": 0, "rows_done": 0, "rows_per_second": 0.0},
    "errors_url": f"{_UPLOAD_URL}errors/",
    "warnings_url": f"{_UPLOAD_URL}warnings/",
    "rules_version": None,
    "created_at": "2026-12-01T09:30:00.123456Z",
    "started_at": None,
    "finished_at": None,
}

UPLOAD_QUEUED = OpenApiExample(
    "queued", value=_UPLOAD, response_only=True, status_codes=["202"], summary="a new upload"
)
UPLOAD_FINISHED = OpenApiExample(
    "completed with errors",
    summary="loaded: 9,996 rows in, 2 rejected, 2 held for their customers",
    value={
        **_UPLOAD,
        "state": "completed_with_errors",
        "rows": {
            "total": 10000,
            "inserted": 9800,
            "updated": 150,
            "unchanged": 46,
            "rejected": 2,
            "pending": 2,
            "duplicates": 0,
            "warned": 0,
        },
        "progress": {"bytes_done": 1048576, "rows_done": 10000, "rows_per_second": 61250.5},
        "started_at": "2026-12-01T09:30:00.301000Z",
        "finished_at": "2026-12-01T09:30:00.464300Z",
    },
    response_only=True,
    status_codes=["200"],
)

_REJECT = {
    "line": 42,
    "field": "total_amount",
    "code": "out_of_range",
    "message": "total_amount must be >= 0, got -5",
    "errors": [
        {
            "field": "total_amount",
            "code": "out_of_range",
            "message": "total_amount must be >= 0, got -5",
        },
        {
            "field": "currency",
            "code": "invalid_currency",
            "message": "currency is not an active ISO 4217 code: 'XXY'",
        },
    ],
    "raw": '{"order_id": "5d1c…", "total_amount": -5, "currency": "XXY", …}',
}
REJECT = OpenApiExample(
    "a row with two problems", value=_REJECT, response_only=True, status_codes=["200"]
)

_RECORDS = [
    {
        "customer_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "created_at": "2026-12-01T09:29:58Z",
    }
]
RECORDS_REQUEST = OpenApiExample(
    "one customer", value=_RECORDS, request_only=True, media_type="application/json"
)
MIXED_REQUEST = OpenApiExample(
    "a customer and a product",
    value=[
        {"type": "customers", "record": _RECORDS[0]},
        {
            "type": "products",
            "record": {
                "product_id": "16fd2706-8baf-433b-82eb-8c7fada847da",
                "sku": "TEA-001",
                "name": "Assam tea, 250 g",
                "price": "7.90",
                "active": True,
                "created_at": "2026-12-01T09:29:59Z",
            },
        },
    ],
    request_only=True,
    media_type="application/json",
)
RECORDS_ACCEPTED = OpenApiExample(
    "accepted",
    value={
        "id": 1207,
        "url": f"{_HOST}/records/batches/1207/",
        "type": "customers",
        "state": "accepted",
        "records": 1,
        "rejected": 0,
        "rejects": [],
        "warnings": [],
        "rules": {},
        "rows": {**_NO_ROWS, "total": 1},
        "errors_url": f"{_HOST}/records/batches/1207/errors/",
        "created_at": "2026-12-01T09:30:00.012000Z",
        "merged_at": None,
    },
    response_only=True,
    status_codes=["202"],
)

SESSION_REQUEST = OpenApiExample(
    "a 3 GB order items file",
    value={"filename": "order_items_2026-11.ndjson.zst", "size": 3221225472},
    request_only=True,
)
