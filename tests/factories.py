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
