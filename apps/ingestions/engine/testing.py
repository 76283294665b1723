"""Helpers for tests of the engine and of code built on it: valid rows of every type,
with any field overridden, and NDJSON bytes (plain, gzip or zstd) made from them."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import zstandard

_NS = uuid.UUID("6c1b8a56-58b1-4f3e-9d0b-2b0f0c6f1e11")


def uid(label: str) -> str:
    """A stable UUID for a readable label: `uid("c1")` is the same in every test."""
    return str(uuid.uuid5(_NS, label))


def customer_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "customer_id": uid("c1"),
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "metadata": {"tier": "gold"},
        "created_at": "2024-01-02T03:04:05Z",
    }
    return {**row, **overrides}


def product_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "product_id": uid("p1"),
        "sku": "SKU-1",
        "name": "Widget",
        "price": "19.99",
        "category_id": uid("cat1"),
        "active": True,
        "created_at": "2024-01-02T03:04:05Z",
    }
    return {**row, **overrides}


def order_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "order_id": uid("o1"),
        "external_order_id": "EXT-1",
        "customer_id": uid("c1"),
        "customer_name_snapshot": "Ada Lovelace",
        "customer_email_snapshot": "ada@example.com",
        "total_amount": "39.98",
        "currency": "EUR",
        "order_status": "paid",
        "order_date": "2024-02-03T04:05:06+01:00",
        "raw_payload": {"source": "test"},
        "created_at": "2024-02-03T04:05:06Z",
    }
    return {**row, **overrides}


def order_item_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "order_item_id": uid("i1"),
        "order_id": uid("o1"),
        "product_id": uid("p1"),
        "quantity": 2,
        "unit_price": "19.99",
        "line_total": "39.98",
    }
    return {**row, **overrides}


ROW_FACTORIES = {
    "customers": customer_row,
    "products": product_row,
    "orders": order_row,
    "order_items": order_item_row,
}


def ndjson_bytes(rows: list[Any], *, compression: str | None = None) -> bytes:
    """Rows (dicts, or str/bytes lines taken verbatim) as NDJSON, optionally compressed."""
    lines = []
    for row in rows:
        if isinstance(row, bytes):
            lines.append(row)
        elif isinstance(row, str):
            lines.append(row.encode())
        else:
            lines.append(json.dumps(row).encode())
    data = b"\n".join(lines) + b"\n"
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data
