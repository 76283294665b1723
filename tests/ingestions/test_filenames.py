"""A file's name is stored the same whichever route brought it: a multipart form, the
`filename` query parameter, a `Content-Disposition` header, a resumable session or tus
metadata. Django cleans a multipart file's name (its last path component, without the
characters that do not print, 255 characters at most with the extension kept); the other
routes clean theirs the same way."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload, UploadSession

pytestmark = pytest.mark.django_db

COMPREHENSIVE = "/api/v1/ingest/comprehensive/"

HOSTILE = {
    "folders": ("../exports\\2026/customers_x.ndjson", "customers_x.ndjson"),
    "right-to-left override": ("customers_\u202eetad.ndjson", "customers_etad.ndjson"),
    "zero-width and no-break spaces": ("\u200bcustomers\u00a0_1.ndjson", "customers_1.ndjson"),
    "too long": ("c" * 300 + ".ndjson", "c" * 248 + ".ndjson"),
}


def _body(route: str) -> bytes:
    """Bytes of each route's own (the same bytes twice would be the first upload again)."""
    return ndjson_bytes([customer_row(customer_id=uid(route), email=f"{route}@example.com")])


def _multipart(client, name: str) -> str:
    form = {"file": SimpleUploadedFile(name, _body("multipart"))}
    answer = client.post(COMPREHENSIVE, form, format="multipart")
    assert answer.status_code == 202, answer.content
    return Upload.objects.get(id=answer.json()["id"]).filename


def _query(client, name: str) -> str:
    answer = client.post(
        f"{COMPREHENSIVE}?filename={quote(name)}",
        data=_body("query"),
        content_type="application/x-ndjson",
    )
    assert answer.status_code == 202, answer.content
    return Upload.objects.get(id=answer.json()["id"]).filename


def _disposition(client, name: str) -> str:
    answer = client.post(
        COMPREHENSIVE,
        data=_body("disposition"),
        content_type="application/x-ndjson",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )
    assert answer.status_code == 202, answer.content
    return Upload.objects.get(id=answer.json()["id"]).filename


def _session(client, name: str) -> str:
    answer = client.post(
        "/api/v1/ingest/sessions/",
        data=json.dumps({"filename": name, "size": 100}),
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    return UploadSession.objects.get(token=answer.json()["token"]).filename


def _tus(client, name: str) -> str:
    metadata = f"filename {base64.b64encode(name.encode()).decode()}"
    answer = client.post(
        "/api/v1/ingest/tus/",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": metadata},
    )
    assert answer.status_code == 201, answer.content
    token = answer["Location"].rstrip("/").rsplit("/", 1)[1]
    return UploadSession.objects.get(token=token).filename


@pytest.mark.parametrize(("sent", "stored"), HOSTILE.values(), ids=HOSTILE.keys())
def test_every_route_stores_the_same_name(tenant_client, sent, stored):
    _, client = tenant_client()
    names = {
        route: take(client, sent)
        for route, take in {
            "multipart": _multipart,
            "query": _query,
            "disposition": _disposition,
            "session": _session,
            "tus": _tus,
        }.items()
    }
    assert names == dict.fromkeys(names, stored)


@pytest.mark.parametrize("name", ["customers\x00.ndjson", "a\nb.ndjson", "x\x85.ndjson"])
def test_a_control_character_in_a_name_is_a_400(tenant_client, name):
    """Outside a multipart form (whose names Django cleans before the view sees them); a
    NUL in the query string is refused before any view (`bad_query`), so the name comes in
    `Content-Disposition` here."""
    _, client = tenant_client()
    answer = client.post(
        COMPREHENSIVE,
        data=_body("control"),
        content_type="application/x-ndjson",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "bad_filename"
    assert not Upload.objects.exists()
