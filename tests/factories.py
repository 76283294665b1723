"""Test factories on top of `apps.ingestions.engine.testing`: raw NDJSON lines whose values
are written as literal JSON text, and the rejects of an upload as plain tuples."""

from __future__ import annotations

import json
from typing import Any

from apps.ingestions.models import Reject, Upload


def raw_row(row: dict[str, Any], **literals: str) -> str:
    """`row` as one JSON line, with each field in `literals` written verbatim as JSON text.

    `raw_row(product_row(), price="1e2")` gives a line whose price is the JSON number `1e2`,
    which `json.dumps` of a Python value could never produce.
    """
    marked = {**row, **{name: f"\x01{name}\x01" for name in literals}}
    text = json.dumps(marked, ensure_ascii=False)
    for name, literal in literals.items():
        text = text.replace(json.dumps(f"\x01{name}\x01"), literal)
    return text


def rejects_of(upload: Upload) -> list[tuple[int, str, str]]:
    """The upload's rejects as `(line, field, code)`, in line order."""
    return list(
        Reject.objects.filter(upload=upload).order_by("line").values_list("line", "field", "code")
    )


def counts_of(upload: Upload) -> dict[str, int]:
    """The upload's row counts, as the API shows them under `rows`, but `warned` (rows
    loaded with a warning of the tenant's rules: not a part of `total`; the rules' tests
    look at it)."""
    upload.refresh_from_db()
    counts = upload.row_counts
    counts.pop("warned")
    return counts


def assert_counts_add_up(upload: Upload) -> None:
    """`total = inserted + updated + unchanged + rejected + pending + duplicates` (SPEC 5)."""
    counts = counts_of(upload)
    total = counts.pop("total")
    assert total == sum(counts.values()), counts


def database_url_of_tests() -> str:
    """The test database as a URL for another process (a worker, gunicorn); HOST may be a
    socket directory (the embedded server keeps it in OPTIONS)."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    host = db["HOST"] or db.get("OPTIONS", {}).get("host", "")
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{auth}@{quote(host, safe='')}{port}/{quote(db['NAME'], safe='')}"


def ingest_stored(tenant, filename: str, data: bytes, *, strict: bool = False) -> Upload:
    """Receive `data` as the API does (bytes stored in a blob) and process it at once, in
    the test's transaction; returns the upload."""
    import io

    from apps.ingestions.services import upload_create, upload_process

    upload = upload_create(
        tenant=tenant, stream=io.BytesIO(data), filename=filename, strict=strict
    ).upload
    upload_process(upload_id=upload.id, stream=io.BytesIO(data))
    upload.refresh_from_db()
    return upload


STAFF_PASSWORD = "a-staff-password-1"  # noqa: S105 - test users'


def staff_user(username: str, *, staff: bool = True, perms: tuple[str, ...] = ()):
    """A user (staff unless told) with these permissions (codenames) granted."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password=STAFF_PASSWORD, is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def signed_in(user):
    """A test client signed in as `user` (Django's session, as /admin/ and the dashboard)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def page_text(response) -> str:
    """A 200 page's text, its entities (`&quot;`) read."""
    import html

    assert response.status_code == 200, response.content[:500]
    return html.unescape(response.content.decode())


def shop_load(tenant, folder) -> None:
    """A small shop for `tenant`, loaded through uploads (files written to `folder`): two
    customers (Ada, Bob), two products (Pen, Ink), three orders (two in EUR, one in USD; one
    on 2024-03-01 23:30 UTC, which is 2024-03-02 in Berlin) and four items."""
    from decimal import Decimal
    from pathlib import Path

    from apps.ingestions.engine.testing import (
        customer_row,
        ndjson_bytes,
        order_item_row,
        order_row,
        product_row,
        uid,
    )
    from apps.ingestions.services import upload_ingest_path

    customers = [
        customer_row(customer_id=uid("ada"), name="Ada", email="ada@example.com"),
        customer_row(customer_id=uid("bob"), name="Bob", email="bob@example.com"),
    ]
    products = [
        product_row(product_id=uid("pen"), sku="PEN", name="Pen", price="2.50"),
        product_row(product_id=uid("ink"), sku="INK", name="Ink", price="10.00"),
    ]
    orders = [
        order_row(
            order_id=uid(o), customer_id=uid(c), currency=cur, total_amount=total, order_date=when
        )
        for o, c, cur, total, when in (
            ("o1", "ada", "EUR", "25.00", "2024-03-01T10:00:00Z"),
            ("o2", "bob", "EUR", "10.01", "2024-03-01T23:30:00Z"),
            ("o3", "ada", "USD", "5.00", "2024-03-05T12:00:00Z"),
        )
    ]
    items = [
        order_item_row(
            order_item_id=uid(i),
            order_id=uid(o),
            product_id=uid(p),
            quantity=q,
            unit_price=price,
            line_total=str(q * Decimal(price)),
        )
        for i, o, p, q, price in (
            ("i1", "o1", "pen", 2, "2.50"),
            ("i2", "o1", "ink", 2, "10.00"),
            ("i3", "o2", "ink", 1, "10.01"),
            ("i4", "o3", "pen", 2, "2.50"),
        )
    ]
    for name, rows in (
        ("customers", customers),
        ("products", products),
        ("orders", orders),
        ("order_items", items),
    ):
        path = Path(folder) / f"{name}_shop.ndjson"
        path.write_bytes(ndjson_bytes(rows))
        upload_ingest_path(tenant=tenant, path=path)
