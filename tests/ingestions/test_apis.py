"""The HTTP API of SPEC section 5, synchronously: authentication, the comprehensive and legacy
upload endpoints, Idempotency-Key, the upload resources, rate limits, errors as problem+json,
the schema and the probes. No worker runs here: an accepted upload stays `queued` (its
enqueue is an on-commit callback, captured and counted, never sent)."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import encode_multipart
from django.utils import timezone
from rest_framework.test import APIClient

from apps.core.models import IdempotencyKey
from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import Blob, Reject, Upload, UploadState
from apps.ingestions.services import pending_expire
from apps.tenants.services import api_key_revoke, api_key_rotate, tenant_create
from tests.factories import ingest_stored

COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
LEGACY = "/api/v1/ingest/orders/"
UPLOADS = "/api/v1/ingest/uploads/"
SERVER = "http://testserver"
PROBLEM = "application/problem+json"
ROW_KEYS = (
    "total",
    "inserted",
    "updated",
    "unchanged",
    "rejected",
    "pending",
    "duplicates",
    "warned",
)

CUSTOMERS = ndjson_bytes([customer_row(), customer_row(customer_id=uid("c2"), email="b@x.io")])
PRODUCTS = ndjson_bytes([product_row()])
ORDERS = ndjson_bytes([order_row()])
ORDER_ITEMS = ndjson_bytes([order_item_row()])


# --- helpers -------------------------------------------------------------------------------


def key_for(tenant) -> str:
    """A fresh working API key of `tenant` (the fixtures do not keep the first one)."""
    return api_key_rotate(tenant=tenant, revoke_existing=False).raw


def post_file(client, filename, data, *, url=COMPREHENSIVE, headers=None, **fields):
    """A multipart upload with the file in the `file` field."""
    form = {"file": SimpleUploadedFile(filename, data), **fields}
    return client.post(url, form, format="multipart", headers=headers or {})


def post_raw(client, data, *, query="", headers=None, content_type="application/x-ndjson"):
    """A raw-body upload."""
    return client.post(
        COMPREHENSIVE + query, data=data, content_type=content_type, headers=headers or {}
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def problem(status: int, title: str, detail: str, code: str) -> dict:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}


def assert_problem(response, status: int, title: str, detail: str, code: str) -> None:
    """An RFC 9457 answer with exactly this status, title, detail and code."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert body == {**problem(status, title, detail, code), "request_id": response["X-Request-Id"]}


def iso(value: datetime | None) -> str | None:
    """A datetime as the API writes it (ISO 8601, UTC as `Z`)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def resource(
    upload_id, *, type: str, filename: str, data: bytes, strict: bool = False, **fields
) -> dict:
    """The upload resource of SPEC 5 for a freshly received upload (`fields` override)."""
    upload = Upload.objects.get(id=upload_id)
    url = f"{SERVER}{UPLOADS}{upload.id}/"
    return {
        "id": str(upload.id),
        "url": url,
        "type": type,
        "filename": filename,
        "state": "queued",
        "strict": strict,
        "dry_run": False,
        "sha256": sha256(data),
        "size_bytes": len(data),
        "error": None,
        "rows": dict.fromkeys(ROW_KEYS, 0),
        "progress": {"bytes_done": 0, "rows_done": 0, "rows_per_second": 0.0},
        "errors_url": url + "errors/",
        "warnings_url": url + "warnings/",
        "rules_version": None,
        "created_at": iso(upload.created_at),
        "started_at": None,
        "finished_at": None,
        **fields,
    }


def stored_bytes(upload: Upload) -> bytes:
    return b"".join(
        bytes(c) for c in upload.blob.chunks.order_by("seq").values_list("data", flat=True)
    )


# --- authentication and tenant isolation ---------------------------------------------------

ENDPOINTS = [
    ("get", UPLOADS),
    ("get", f"{UPLOADS}{uid('any')}/"),
    ("get", f"{UPLOADS}{uid('any')}/errors/"),
    ("post", COMPREHENSIVE),
    ("post", LEGACY),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_a_request_without_a_key(db, method, path):
    """No X-API-Key: 401 problem+json saying where the key goes."""
    response = getattr(APIClient(), method)(path)
    assert_problem(
        response,
        401,
        "Unauthorized",
        "Send your API key in the X-API-Key header.",
        "not_authenticated",
    )
    assert response["WWW-Authenticate"] == "X-API-Key"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "key",
    ["nonsense", "ck_000000000000_abcdef", "ck_zz_whatever", ""],
    ids=["garbage", "unknown-prefix", "malformed", "empty"],
)
def test_every_endpoint_refuses_a_wrong_key(db, method, path, key):
    """An unknown or malformed key: 401 problem+json (an empty header counts as missing)."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    response = getattr(client, method)(path)
    if key:
        detail, code = "The API key is unknown or revoked.", "authentication_failed"
    else:
        detail, code = "Send your API key in the X-API-Key header.", "not_authenticated"
    assert_problem(response, 401, "Unauthorized", detail, code)


def test_a_key_with_the_right_prefix_but_the_wrong_secret_is_refused(tenant):
    """Only the whole key authenticates: its public prefix with another secret is 401."""
    prefix = key_for(tenant).split("_")[1]
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=f"ck_{prefix}_{'x' * 43}")
    assert_problem(
        client.get(UPLOADS),
        401,
        "Unauthorized",
        "The API key is unknown or revoked.",
        "authentication_failed",
    )


def test_a_revoked_key_is_refused_and_a_rotated_one_works(tenant):
    """After revocation the key answers 401; a newly issued key of the tenant answers 200."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key_for(tenant))
    assert client.get(UPLOADS).status_code == 200
    api_key_revoke(tenant=tenant)
    assert_problem(
        client.get(UPLOADS),
        401,
        "Unauthorized",
        "The API key is unknown or revoked.",
        "authentication_failed",
    )
    client.credentials(HTTP_X_API_KEY=key_for(tenant))
    assert client.get(UPLOADS).status_code == 200


def test_an_inactive_tenants_key_is_refused(tenant):
    """A deactivated tenant's keys stop working."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key_for(tenant))
    tenant.is_active = False
    tenant.save()
    assert client.get(UPLOADS).status_code == 401


def test_another_tenants_upload_is_not_found_on_detail_and_errors(client_for, tenant, other_tenant):
    """Nothing of another tenant is visible: its upload id answers 404, not 403."""
    theirs = post_file(client_for(other_tenant), "customers_1.ndjson", CUSTOMERS).json()["id"]
    mine = client_for(tenant)
    for path in (f"{UPLOADS}{theirs}/", f"{UPLOADS}{theirs}/errors/"):
        assert_problem(mine.get(path), 404, "Not found", "No such upload.", "not_found")
    ndjson = mine.get(f"{UPLOADS}{theirs}/errors/", HTTP_ACCEPT="application/x-ndjson")
    assert ndjson.status_code == 404
    assert json.loads(ndjson.content)["code"] == "not_found"


@pytest.mark.parametrize(
    ("upload_id", "detail"),
    [
        ("not-a-uuid", "No resource at {path}."),  # no route: only a UUID is an upload id
        ("123", "No resource at {path}."),
        (uid("never-created"), "No such upload."),
    ],
)
def test_a_malformed_or_unknown_upload_id_is_not_found(client, upload_id, detail):
    """A malformed or unknown id is 404 problem+json on detail and errors, never a 500."""
    for path in (f"{UPLOADS}{upload_id}/", f"{UPLOADS}{upload_id}/errors/"):
        response = client.get(path)
        assert_problem(response, 404, "Not found", detail.format(path=path), "not_found")


def test_the_list_shows_only_the_tenants_own_uploads(client_for, tenant, other_tenant):
    """Each tenant lists its own uploads, even of identical bytes."""
    mine = post_file(client_for(tenant), "customers_1.ndjson", CUSTOMERS).json()["id"]
    theirs = post_file(client_for(other_tenant), "customers_1.ndjson", CUSTOMERS).json()["id"]
    assert mine != theirs
    body = client_for(tenant).get(UPLOADS).json()
    assert body["count"] == 1
    assert [u["id"] for u in body["results"]] == [mine]
    assert [u["id"] for u in client_for(other_tenant).get(UPLOADS).json()["results"]] == [theirs]


# --- POST /ingest/comprehensive/ -------------------------------------------------------------


def test_a_multipart_upload_is_accepted_stored_and_queued(
    client, tenant, django_capture_on_commit_callbacks
):
    """202 with the upload resource and its status URL in Location; bytes kept as received."""
    with django_capture_on_commit_callbacks() as queued:
        response = post_file(client, "customers_1.ndjson", CUSTOMERS)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == resource(
        body["id"], type="customers", filename="customers_1.ndjson", data=CUSTOMERS
    )
    assert response["Location"] == body["url"]
    assert len(queued) == 1
    upload = Upload.objects.get(id=body["id"])
    assert (upload.tenant, upload.state, upload.strict) == (tenant, UploadState.QUEUED, False)
    assert stored_bytes(upload) == CUSTOMERS
    assert upload.blob.sha256 == sha256(CUSTOMERS)


def test_a_gzip_upload_is_described_by_its_compressed_bytes(client):
    """sha256 and size_bytes describe the bytes as received (compressed)."""
    data = gzip.compress(ORDERS)
    response = post_file(client, "orders_1.ndjson.gz", data)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == resource(body["id"], type="orders", filename="orders_1.ndjson.gz", data=data)
    assert stored_bytes(Upload.objects.get(id=body["id"])) == data


def test_a_raw_body_upload_takes_its_name_from_the_filename_parameter(client):
    """A raw body with `?filename=`: the name gives the type and is kept."""
    response = post_raw(client, PRODUCTS, query="?filename=products_2024.ndjson")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == resource(
        body["id"], type="products", filename="products_2024.ndjson", data=PRODUCTS
    )
    assert response["Location"] == body["url"]
    assert stored_bytes(Upload.objects.get(id=body["id"])) == PRODUCTS


def test_a_raw_body_upload_takes_its_name_from_content_disposition(client):
    """A raw body with `Content-Disposition: attachment; filename="..."`."""
    response = post_raw(
        client,
        ORDER_ITEMS,
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="order_items_7.jsonl"'},
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == resource(
        body["id"], type="order_items", filename="order_items_7.jsonl", data=ORDER_ITEMS
    )


def test_a_raw_body_upload_decodes_an_extended_filename(client):
    """`filename*=UTF-8''...` (RFC 6266/8187) names the file with its decoded text."""
    response = post_raw(
        client,
        CUSTOMERS,
        headers={
            "Content-Disposition": "attachment; filename*=UTF-8''customers_%C3%A9t%C3%A9.ndjson"
        },
    )
    assert response.status_code == 202, response.content
    assert response.json()["filename"] == "customers_été.ndjson"


def test_the_query_filename_wins_over_content_disposition(client):
    """With both, `?filename=` names the file."""
    response = post_raw(
        client,
        CUSTOMERS,
        query="?filename=customers_q.ndjson",
        headers={"Content-Disposition": 'attachment; filename="other.ndjson"'},
    )
    assert response.status_code == 202, response.content
    assert response.json()["filename"] == "customers_q.ndjson"


@pytest.mark.parametrize("where", ["form", "query"])
def test_an_explicit_type_wins_over_the_file_name(client, where):
    """`type` (form field or query parameter) decides over the name's prefix."""
    if where == "form":
        response = post_file(client, "customers_1.ndjson", CUSTOMERS, type="products")
    else:
        response = client.post(
            COMPREHENSIVE + "?type=products",
            {"file": SimpleUploadedFile("customers_1.ndjson", CUSTOMERS)},
            format="multipart",
        )
    assert response.status_code == 202, response.content
    assert response.json()["type"] == "products"
    assert Upload.objects.get(id=response.json()["id"]).record_type == "products"


def test_an_explicit_type_on_a_raw_body_wins_over_the_name(client):
    """A raw body with `?type=` and `?filename=`: the type parameter decides."""
    response = post_raw(client, ORDERS, query="?filename=customers_1.ndjson&type=orders")
    assert response.status_code == 202, response.content
    assert (response.json()["type"], response.json()["filename"]) == (
        "orders",
        "customers_1.ndjson",
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([customer_row()], "customers"),
        ([product_row()], "products"),
        ([order_row()], "orders"),
        ([order_item_row()], "order_items"),
        (["", "not json", {"unrelated": 1}, product_row()], "products"),
    ],
    ids=["customers", "products", "orders", "order_items", "after-noise"],
)
def test_the_type_of_an_unnamed_file_comes_from_its_first_rows(client, rows, expected):
    """Neither name nor explicit type: the keys of the first rows decide."""
    data = ndjson_bytes(rows)
    response = post_file(client, "export.ndjson", data)
    assert response.status_code == 202, response.content
    assert response.json()["type"] == expected


def test_the_type_of_an_unnamed_gzip_file_comes_from_its_decompressed_rows(client):
    """The keys are read from the decompressed data."""
    response = post_raw(client, gzip.compress(ORDER_ITEMS), query="?filename=data.gz")
    assert response.status_code == 202, response.content
    assert response.json()["type"] == "order_items"


@pytest.mark.parametrize(
    "data",
    [ndjson_bytes([{"foo": 1, "bar": 2}]), b"just some text\n", b"[1, 2, 3]\n"],
    ids=["unknown-keys", "not-json", "not-an-object"],
)
def test_an_undecidable_type_is_refused(client, data):
    """Nothing decides the type: 400 problem+json, nothing stored."""
    response = post_file(client, "data.ndjson", data)
    assert_problem(
        response,
        400,
        "Record type could not be determined",
        "Cannot tell the record type of 'data.ndjson': name it customers_*, products_*, "
        "orders_* or order_items_*, or give the type explicitly.",
        "unknown_type",
    )
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


@pytest.mark.parametrize("where", ["form", "query"])
def test_an_unknown_explicit_type_is_refused(client, where):
    """An explicit type that is not a record type: 400 naming the valid ones."""
    if where == "form":
        response = post_file(client, "customers_1.ndjson", CUSTOMERS, type="invoices")
    else:
        response = post_raw(client, CUSTOMERS, query="?filename=customers_1.ndjson&type=invoices")
    assert_problem(
        response,
        400,
        "Record type could not be determined",
        "Unknown type 'invoices'; expected one of customers, products, orders, order_items.",
        "unknown_type",
    )
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


def test_an_empty_raw_body_is_refused(client):
    """No bytes at all: 400."""
    response = post_raw(client, b"", query="?filename=customers_1.ndjson")
    assert_problem(
        response,
        400,
        "Bad request",
        "The request body is empty: send an NDJSON file.",
        "parse_error",
    )
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


def test_an_empty_multipart_file_is_refused(client):
    """A `file` part with no bytes: 400."""
    response = post_file(client, "customers_1.ndjson", b"")
    assert_problem(response, 400, "Bad request", "The file is empty.", "empty_file")
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


def test_a_multipart_body_without_a_file_is_refused(client):
    """Multipart with only other fields: 400 naming the missing `file` field."""
    response = client.post(COMPREHENSIVE, {"type": "customers"}, format="multipart")
    assert_problem(
        response, 400, "Bad request", "The multipart body has no `file` field.", "parse_error"
    )
    assert Upload.objects.count() == 0


def test_a_form_encoded_body_is_refused(client):
    """application/x-www-form-urlencoded is neither a file part nor a raw file: 400."""
    response = client.post(
        COMPREHENSIVE, data="a=1", content_type="application/x-www-form-urlencoded"
    )
    assert_problem(
        response,
        400,
        "Bad request",
        "Send the file as multipart/form-data or as the raw request body.",
        "parse_error",
    )


def test_identical_bytes_again_answer_200_with_the_original_upload(
    client, django_capture_on_commit_callbacks
):
    """Same tenant, type and bytes (even under another name): 200, same id, nothing queued."""
    first = post_file(client, "customers_1.ndjson", CUSTOMERS)
    assert first.status_code == 202
    with django_capture_on_commit_callbacks() as queued:
        again = post_file(client, "customers_copy.ndjson", CUSTOMERS)
        raw = post_raw(client, CUSTOMERS, query="?filename=customers_1.ndjson")
    assert again.status_code == 200, again.content
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert raw.status_code == 200
    assert raw.json()["id"] == first.json()["id"]
    assert queued == []
    assert (Upload.objects.count(), Blob.objects.count()) == (1, 1)


def test_identical_bytes_as_another_type_or_tenant_are_a_new_upload(
    client, client_for, other_tenant
):
    """The duplicate check is per tenant and type."""
    first = post_file(client, "customers_1.ndjson", CUSTOMERS).json()["id"]
    as_products = post_file(client, "customers_1.ndjson", CUSTOMERS, type="products")
    elsewhere = post_file(client_for(other_tenant), "customers_1.ndjson", CUSTOMERS)
    assert (as_products.status_code, elsewhere.status_code) == (202, 202)
    assert len({first, as_products.json()["id"], elsewhere.json()["id"]}) == 3


@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_a_body_over_the_upload_limit_is_refused_with_413(client, settings, how):
    """Over INGEST_MAX_UPLOAD_BYTES: 413 problem+json, nothing stored."""
    settings.INGEST_MAX_UPLOAD_BYTES = 100
    data = ndjson_bytes([customer_row()])
    assert len(data) > 100
    if how == "multipart":
        response = post_file(client, "customers_1.ndjson", data)
    else:
        response = post_raw(client, data, query="?filename=customers_1.ndjson")
    length = response.wsgi_request.META["CONTENT_LENGTH"]
    assert_problem(
        response,
        413,
        "Payload too large",
        f"The request body is {length} bytes; the limit is 100.",
        "payload_too_large",
    )
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


def test_a_body_of_exactly_the_upload_limit_is_accepted(client, settings):
    """The limit is on the request: a body of exactly the limit passes."""
    settings.INGEST_MAX_UPLOAD_BYTES = len(CUSTOMERS)
    response = post_raw(client, CUSTOMERS, query="?filename=customers_1.ndjson")
    assert response.status_code == 202, response.content


@pytest.mark.parametrize("option", ["strict", "dry_run"])
@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("form", "true", True),
        ("form", "1", True),
        ("form", "false", False),
        ("query", "true", True),
        ("query", "yes", True),
        ("query", "0", False),
    ],
)
def test_strict_and_dry_run_are_taken_from_a_form_field_or_a_query_parameter(
    client, option, where, value, expected
):
    """`strict` and `dry_run` as multipart field or query parameter are kept on the upload."""
    if where == "form":
        response = post_file(client, "customers_1.ndjson", CUSTOMERS, **{option: value})
    else:
        query = f"?filename=customers_1.ndjson&{option}={value}"
        response = post_raw(client, CUSTOMERS, query=query)
    assert response.status_code == 202, response.content
    assert response.json()[option] is expected
    assert getattr(Upload.objects.get(id=response.json()["id"]), option) is expected


@pytest.mark.parametrize(
    ("option", "query", "form"),
    [("strict", "true", "false"), ("dry_run", "true", "false"), ("type", "products", "customers")],
)
def test_an_option_given_in_the_query_and_the_form_differently_is_400(client, option, query, form):
    """Which one was meant is anyone's guess, as for one given twice in the query: a 400
    naming it, nothing stored. The form's was taken, silently (a strict upload loaded as
    one that is not, a dry run as a real one). The same value in both is taken."""
    url = f"{COMPREHENSIVE}?{option}={query}"
    response = post_file(client, "customers_1.ndjson", CUSTOMERS, url=url, **{option: form})
    assert response.status_code == 400, response.content
    assert response.json()["errors"][option] == [
        f"Give {option} once: the query says {query!r}, the form {form!r}."
    ]
    assert not Upload.objects.exists()
    same = post_file(client, "customers_1.ndjson", CUSTOMERS, url=url, **{option: query})
    assert same.status_code == 202, same.content


# --- Idempotency-Key -----------------------------------------------------------------------


def test_the_same_key_and_file_replay_the_first_response(
    client, django_capture_on_commit_callbacks
):
    """A retry with the same key and file (new multipart boundary) gets the stored answer,
    marked `Idempotent-Replayed: true`, and nothing new is stored or queued."""
    first = post_file(client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first
    boundary = "AnotherBoundary1234"
    body = encode_multipart(boundary, {"file": SimpleUploadedFile("customers_1.ndjson", CUSTOMERS)})
    with django_capture_on_commit_callbacks() as queued:
        again = client.post(
            COMPREHENSIVE,
            data=body,
            content_type=f"multipart/form-data; boundary={boundary}",
            headers={"Idempotency-Key": "k-1"},
        )
    assert again.status_code == 202, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert queued == []
    assert (Upload.objects.count(), Blob.objects.count()) == (1, 1)


def test_the_same_key_replays_a_raw_body_upload(client):
    """Raw-body uploads are fingerprinted by their bytes and parameters too."""
    headers = {"Idempotency-Key": "raw-1"}
    query = "?filename=orders_1.ndjson&strict=true"
    first = post_raw(client, ORDERS, query=query, headers=headers)
    again = post_raw(client, ORDERS, query=query, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Upload.objects.count() == 1


def test_a_replay_answers_the_stored_response_even_after_the_upload_moved_on(client):
    """The replay is the first response as it was (state `queued`), not the current state."""
    first = post_file(client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": "k"})
    Upload.objects.filter(id=first.json()["id"]).update(state=UploadState.COMPLETED)
    again = post_file(client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": "k"})
    assert again.json() == first.json()
    assert again.json()["state"] == "queued"


def _mismatch(response) -> None:
    assert_problem(
        response,
        422,
        "Unprocessable request",
        "This Idempotency-Key was used for a different request.",
        "idempotency_mismatch",
    )


@pytest.mark.parametrize(
    "second",
    [
        {"filename": "customers_1.ndjson", "data": ndjson_bytes([customer_row(name="Other")])},
        {"filename": "customers_2.ndjson", "data": CUSTOMERS},
        {"filename": "customers_1.ndjson", "data": CUSTOMERS, "strict": "true"},
        {"filename": "customers_1.ndjson", "data": CUSTOMERS, "type": "products"},
        {"filename": "customers_1.ndjson", "data": CUSTOMERS, "url": LEGACY},
    ],
    ids=["other-bytes", "other-filename", "other-strict", "other-type", "other-endpoint"],
)
def test_the_same_key_with_a_different_request_is_422(client, second):
    """Same key, different file, parameters or endpoint: 422, nothing new stored."""
    first = post_file(client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": "k-2"})
    assert first.status_code == 202
    response = post_file(
        client,
        second.pop("filename"),
        second.pop("data"),
        headers={"Idempotency-Key": "k-2"},
        **second,
    )
    _mismatch(response)
    assert "Idempotent-Replayed" not in response
    assert (Upload.objects.count(), Blob.objects.count()) == (1, 1)


def test_the_same_key_while_the_first_request_is_in_flight_is_409(client, tenant, key_in_flight):
    """A key claimed by a request still running: 409, nothing stored."""
    key_in_flight(tenant, "busy")
    response = post_file(
        client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": "busy"}
    )
    assert_problem(
        response,
        409,
        "Conflict",
        "A request with this Idempotency-Key is still being processed; retry later.",
        "idempotency_in_flight",
    )
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)
    assert IdempotencyKey.objects.get(tenant=tenant, key="busy").status_code is None


def test_idempotency_keys_are_per_tenant(client_for, tenant, other_tenant):
    """The same key in two tenants names two independent requests."""
    headers = {"Idempotency-Key": "shared"}
    mine = post_file(client_for(tenant), "customers_1.ndjson", CUSTOMERS, headers=headers)
    theirs = post_file(client_for(other_tenant), "orders_1.ndjson", ORDERS, headers=headers)
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert "Idempotent-Replayed" not in theirs
    assert Upload.objects.get(id=theirs.json()["id"]).tenant == other_tenant
    assert IdempotencyKey.objects.filter(key="shared").count() == 2


def test_an_expired_key_can_be_used_for_a_new_request(client, tenant, settings):
    """Past IDEMPOTENCY_TTL_SECONDS the key is free: a different request is processed."""
    headers = {"Idempotency-Key": "old"}
    first = post_file(client, "customers_1.ndjson", CUSTOMERS, headers=headers)
    IdempotencyKey.objects.filter(tenant=tenant, key="old").update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS + 1)
    )
    second = post_file(client, "orders_1.ndjson", ORDERS, headers=headers)
    assert second.status_code == 202, second.content
    assert "Idempotent-Replayed" not in second
    assert second.json()["id"] != first.json()["id"]
    replay = post_file(client, "orders_1.ndjson", ORDERS, headers=headers)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == second.json()


def test_a_key_whose_request_failed_is_free_for_a_retry(client, tenant):
    """A refused request (400) does not keep the key: the corrected retry is processed."""
    headers = {"Idempotency-Key": "retry-me"}
    refused = post_file(client, "data.ndjson", b"nothing to see\n", headers=headers)
    assert refused.status_code == 400
    assert not IdempotencyKey.objects.filter(tenant=tenant, key="retry-me").exists()
    accepted = post_file(client, "customers_1.ndjson", CUSTOMERS, headers=headers)
    assert accepted.status_code == 202, accepted.content
    assert "Idempotent-Replayed" not in accepted


def test_a_key_also_replays_a_duplicate_upload_answer(client):
    """A keyed request answered 200 (identical bytes) replays as 200 with the same body."""
    original = post_file(client, "customers_1.ndjson", CUSTOMERS)
    headers = {"Idempotency-Key": "dup"}
    first = post_file(client, "customers_1.ndjson", CUSTOMERS, headers=headers)
    again = post_file(client, "customers_1.ndjson", CUSTOMERS, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() == original.json()


@pytest.mark.parametrize("key", ["k" * 256, "a\x00b", "a\x7fb", "caf\xe9"])
def test_an_overlong_or_unprintable_idempotency_key_is_refused(client, key):
    """A key over 255 characters, or with a character outside printable ASCII (a NUL
    would reach the database), is a 400 in problem+json."""
    response = post_file(client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": key})
    assert_problem(
        response,
        400,
        "Bad request",
        "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        "bad_key",
    )
    assert Upload.objects.count() == 0


def test_an_idempotency_key_with_a_comma_two_headers_joined_is_refused(client):
    """The WSGI server joins an Idempotency-Key header sent twice into one value with a
    comma: neither key is taken for the other (400), nothing is stored."""
    response = post_file(
        client, "customers_1.ndjson", CUSTOMERS, headers={"Idempotency-Key": "first,second"}
    )
    assert_problem(
        response,
        400,
        "Bad request",
        "Idempotency-Key must be one key, without a comma (a header sent twice is joined "
        "with one).",
        "bad_key",
    )
    assert Upload.objects.count() == 0


# --- legacy POST /ingest/orders/ -------------------------------------------------------------

DEPRECATION = "@1767225600"
SUCCESSOR = f'<{SERVER}{COMPREHENSIVE}>; rel="successor-version"'


def assert_deprecated(response) -> None:
    assert response["Deprecation"] == DEPRECATION
    assert response["Link"] == SUCCESSOR


@pytest.mark.parametrize(
    ("filename", "data", "type"),
    [("orders_1.ndjson", ORDERS, "orders"), ("order_items_1.ndjson", ORDER_ITEMS, "order_items")],
)
def test_the_legacy_endpoint_accepts_orders_and_order_items(client, filename, data, type):
    """Orders and order_items files: 202 with the upload resource, marked deprecated."""
    response = post_file(client, filename, data, url=LEGACY)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == resource(body["id"], type=type, filename=filename, data=data)
    assert response["Location"] == body["url"]
    assert_deprecated(response)


@pytest.mark.parametrize(
    ("filename", "data", "fields", "refused"),
    [
        ("customers_1.ndjson", CUSTOMERS, {}, "customers"),
        ("products_1.ndjson", PRODUCTS, {}, "products"),
        ("export.ndjson", CUSTOMERS, {}, "customers"),
        ("orders_1.ndjson", ORDERS, {"type": "customers"}, "customers"),
    ],
    ids=["customers", "products", "detected-customers", "explicit-customers"],
)
def test_the_legacy_endpoint_refuses_other_types(client, filename, data, fields, refused):
    """Customers or products on the legacy endpoint: 400, deprecated headers, nothing stored."""
    response = post_file(client, filename, data, url=LEGACY, **fields)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert (body["status"], body["title"], body["code"], body["detail"]) == (
        400,
        "Record type not accepted here",
        "type_not_allowed",
        f"This endpoint takes order_items and orders files only, not {refused}.",
    )
    assert_deprecated(response)
    assert (Upload.objects.count(), Blob.objects.count()) == (0, 0)


def test_the_legacy_endpoint_marks_every_answer_deprecated(client, db):
    """401, 405, 400 and a duplicate's 200 all carry Deprecation and Link."""
    assert_deprecated(APIClient().post(LEGACY))
    assert_deprecated(client.get(LEGACY))
    empty = client.post(LEGACY, data=b"", content_type="application/x-ndjson")
    assert empty.status_code == 400
    assert_deprecated(empty)
    assert post_file(client, "orders_1.ndjson", ORDERS, url=LEGACY).status_code == 202
    again = post_file(client, "orders_1.ndjson", ORDERS, url=LEGACY)
    assert again.status_code == 200
    assert_deprecated(again)


def test_the_comprehensive_endpoint_is_not_marked_deprecated(client):
    """Only the legacy endpoint carries Deprecation."""
    response = post_file(client, "orders_1.ndjson", ORDERS)
    assert "Deprecation" not in response
    assert "Link" not in response


# --- GET /ingest/uploads/ and detail -------------------------------------------------------


def _make_uploads(client) -> list[str]:
    """Five uploads of different types, oldest first."""
    files = [
        ("customers_1.ndjson", CUSTOMERS),
        ("products_1.ndjson", PRODUCTS),
        ("orders_1.ndjson", ORDERS),
        ("orders_2.ndjson", ndjson_bytes([order_row(order_id=uid("o2"))])),
        ("order_items_1.ndjson", ORDER_ITEMS),
    ]
    ids = []
    for name, data in files:
        response = post_file(client, name, data)
        assert response.status_code == 202
        ids.append(response.json()["id"])
    return ids


def test_the_upload_list_is_paginated_newest_first(client, client_for, other_tenant):
    """limit/offset pages with `count`, `next` and `previous`, newest upload first."""
    ids = _make_uploads(client)
    post_file(client_for(other_tenant), "customers_9.ndjson", CUSTOMERS)
    newest_first = list(reversed(ids))
    page1 = client.get(UPLOADS, {"limit": 2})
    assert page1.status_code == 200
    body = page1.json()
    assert body["count"] == 5
    assert body["previous"] is None
    assert body["next"] == f"{SERVER}{UPLOADS}?limit=2&offset=2"
    assert [u["id"] for u in body["results"]] == newest_first[:2]
    page2 = client.get(UPLOADS, {"limit": 2, "offset": 2}).json()
    assert [u["id"] for u in page2["results"]] == newest_first[2:4]
    assert page2["previous"] == f"{SERVER}{UPLOADS}?limit=2"
    page3 = client.get(UPLOADS, {"limit": 2, "offset": 4}).json()
    assert [u["id"] for u in page3["results"]] == newest_first[4:]
    assert page3["next"] is None
    everything = client.get(UPLOADS).json()
    assert [u["id"] for u in everything["results"]] == newest_first
    assert everything["next"] is None


def test_the_upload_list_items_are_full_upload_resources(client):
    """Each listed item is the same resource as the detail endpoint gives."""
    response = post_file(client, "customers_1.ndjson", CUSTOMERS)
    listed = client.get(UPLOADS).json()["results"]
    assert listed == [response.json()]


def test_the_upload_list_filters_by_state_and_type(client):
    """`state` and `type` narrow the list, alone or together."""
    ids = _make_uploads(client)
    Upload.objects.filter(id__in=[ids[0], ids[2]]).update(state=UploadState.COMPLETED)

    def listed(**params) -> set[str]:
        body = client.get(UPLOADS, params).json()
        assert body["count"] == len(body["results"])
        return {u["id"] for u in body["results"]}

    assert listed(type="orders") == {ids[2], ids[3]}
    assert listed(state="completed") == {ids[0], ids[2]}
    assert listed(state="queued") == {ids[1], ids[3], ids[4]}
    assert listed(state="completed", type="orders") == {ids[2]}
    assert listed(state="failed") == set()
    assert listed(type="order_items") == {ids[4]}


def test_the_upload_detail_shows_state_counts_and_progress(client):
    """GET the status URL: the upload resource; counts and progress as stored."""
    body = post_file(client, "orders_1.ndjson", ORDERS).json()
    detail = client.get(body["url"])
    assert detail.status_code == 200
    assert detail.json() == body
    started = timezone.now()
    Upload.objects.filter(id=body["id"]).update(
        state=UploadState.PROCESSING, started_at=started, bytes_done=10, rows_done=3
    )
    live = client.get(body["url"]).json()
    assert live["state"] == "processing"
    assert live["started_at"] == iso(started)
    assert (live["progress"]["bytes_done"], live["progress"]["rows_done"]) == (10, 3)
    assert live["progress"]["rows_per_second"] >= 0


# --- GET /ingest/uploads/{id}/errors/ ------------------------------------------------------

BAD_CUSTOMERS = [
    customer_row(),
    customer_row(customer_id=uid("c2"), email="not-an-email"),
    '{"customer_id": ',
    "",
    {k: v for k, v in customer_row(customer_id=uid("c3")).items() if k != "name"},
    customer_row(customer_id="nope"),
]


@pytest.fixture
def rejected_upload(tenant, ndjson, load) -> Upload:
    """A customers upload with four bad rows, processed synchronously."""
    upload = load(tenant, ndjson("customers_bad.ndjson", BAD_CUSTOMERS))
    assert upload.state == "completed_with_errors"
    return upload


def _expected_rejects() -> list[dict]:
    lines = ndjson_bytes(BAD_CUSTOMERS).decode().splitlines()
    problems = [
        (2, "email", "invalid_email", "email is not a valid email address: 'not-an-email'"),
        (3, "", "invalid_json", "Input data was truncated"),
        (5, "name", "missing_field", "name is required"),
        (6, "customer_id", "invalid_uuid", "customer_id is not a valid UUID: 'nope'"),
    ]
    rejects = []
    for line, field, code, message in problems:
        problem = {"field": field, "code": code, "message": message}
        rejects.append({"line": line, **problem, "errors": [problem], "raw": lines[line - 1]})
    return rejects


def test_the_errors_are_listed_as_paginated_json(client, rejected_upload):
    """Rejects in line order as {line, field, code, message, errors, raw}, paginated."""
    url = f"{UPLOADS}{rejected_upload.id}/errors/"
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "count": 4,
        "next": None,
        "previous": None,
        "results": _expected_rejects(),
    }
    page = client.get(url, {"limit": 2, "offset": 1}).json()
    assert page["count"] == 4
    assert page["results"] == _expected_rejects()[1:3]
    assert page["next"] == f"{SERVER}{url}?limit=2&offset=3"


@pytest.mark.parametrize("how", ["accept", "format", "format-over-accept"])
def test_the_errors_are_streamed_as_ndjson(client, rejected_upload, how):
    """`Accept: application/x-ndjson` or `?format=ndjson` (which wins over an Accept of
    JSON, as a client library may send by itself): one reject object per line."""
    url = f"{UPLOADS}{rejected_upload.id}/errors/"
    if how == "accept":
        response = client.get(url, HTTP_ACCEPT="application/x-ndjson")
    elif how == "format":
        response = client.get(url, {"format": "ndjson"})
    else:
        response = client.get(url, {"format": "ndjson"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    content = b"".join(response.streaming_content).decode()
    assert content.endswith("\n")
    assert [json.loads(line) for line in content.splitlines()] == _expected_rejects()


def test_the_errors_of_a_clean_upload_are_empty(client):
    """An upload without rejects: an empty page, an empty NDJSON stream."""
    body = post_file(client, "customers_1.ndjson", CUSTOMERS).json()
    assert client.get(body["errors_url"]).json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }
    stream = client.get(body["errors_url"], {"format": "ndjson"})
    assert b"".join(stream.streaming_content) == b""


def test_the_errors_endpoint_lists_only_that_uploads_rejects(
    client, rejected_upload, tenant, ndjson, load
):
    """Rejects of another upload of the same tenant are not mixed in."""
    other = load(tenant, ndjson("products_bad.ndjson", [product_row(price="-1")]))
    assert Reject.objects.filter(upload=other).count() == 1
    assert client.get(f"{UPLOADS}{rejected_upload.id}/errors/").json()["count"] == 4


@pytest.fixture
def orphaned(client, tenant) -> tuple[dict, bytes]:
    """An orders upload whose one row was held pending, then expired; (resource, file)."""
    data = ndjson_bytes([order_row(customer_id=uid("nobody"))])
    upload = ingest_stored(tenant, "orders_1.ndjson", data)
    url = f"{UPLOADS}{upload.id}/"
    before = client.get(url).json()
    assert (before["state"], before["rows"]) == (
        "completed",
        {**dict.fromkeys(ROW_KEYS, 0), "total": 1, "pending": 1},
    )
    assert pending_expire(retention=timedelta(0)) == 1
    return client.get(url).json(), data


def test_expired_pending_rows_show_as_orphan_errors(client, orphaned):
    """Pending rows past the retention window move from pending to rejected (`orphan`) and the
    upload becomes `completed_with_errors`."""
    after, data = orphaned
    assert (after["state"], after["rows"]) == (
        "completed_with_errors",
        {**dict.fromkeys(ROW_KEYS, 0), "total": 1, "rejected": 1},
    )
    [reject] = client.get(after["errors_url"]).json()["results"]
    problem = {
        "field": "customer_id",
        "code": "orphan",
        "message": "its parent (customer_id) did not arrive within the retention window",
    }
    assert {k: v for k, v in reject.items() if k != "raw"} == {
        "line": 1,
        **problem,
        "errors": [problem],
    }
    assert json.loads(reject["raw"])["order_id"] == uid("o1")


def test_an_orphan_reject_keeps_the_line_as_sent(client, orphaned):
    """Like every other reject, an orphan's `raw` is the physical line the client sent."""
    after, data = orphaned
    [reject] = client.get(after["errors_url"]).json()["results"]
    assert reject["raw"] == data.decode().rstrip("\n")


# --- limits and errors -----------------------------------------------------------------------


def test_requests_over_the_rate_limit_get_429_with_retry_after(
    client_for, tenant, other_tenant, settings
):
    """Per key: past the limit, 429 problem+json with Retry-After; other keys are unaffected."""
    settings.API_RATE_LIMIT = "2/min"
    client = client_for(tenant)
    assert [client.get(UPLOADS).status_code for _ in range(2)] == [200, 200]
    response = client.get(UPLOADS)
    assert response.status_code == 429
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert {k: body[k] for k in ("type", "title", "status", "code")} == {
        "type": "about:blank",
        "title": "Too many requests",
        "status": 429,
        "code": "throttled",
    }
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 60
    assert body["detail"] == f"Request was throttled. Expected available in {retry_after} seconds."
    upload = post_file(client, "customers_1.ndjson", CUSTOMERS)
    assert upload.status_code == 429
    assert Upload.objects.count() == 0
    assert client_for(other_tenant).get(UPLOADS).status_code == 200


def test_an_unknown_url_is_problem_json_in_debug_mode_too(db, settings):
    """With DEBUG on (the dev default), Django's HTML 404 page is replaced too."""
    settings.DEBUG = True
    response = APIClient().get("/api/v1/nope/", HTTP_ACCEPT="text/html")
    assert_problem(response, 404, "Not found", "No resource at /api/v1/nope/.", "not_found")


@pytest.mark.parametrize("path", ["/nope/", "/api/v1/nope/", "/api/v1/ingest/uploads/x/y/z/"])
def test_an_unknown_url_is_404_problem_json(db, path):
    """Unknown URLs answer problem+json, never an HTML page."""
    response = APIClient().get(path, HTTP_ACCEPT="text/html")
    assert_problem(response, 404, "Not found", f"No resource at {path}.", "not_found")


def test_a_wrong_method_is_405_problem_json(client):
    """GET on the upload endpoint: 405 with Allow."""
    response = client.get(COMPREHENSIVE)
    assert_problem(
        response, 405, "Method not allowed", 'Method "GET" not allowed.', "method_not_allowed"
    )
    assert response["Allow"] == "POST, OPTIONS"


# --- schema and probes -----------------------------------------------------------------------

API_PATHS = {
    "/api/v1/ingest/comprehensive/",
    "/api/v1/ingest/orders/",
    "/api/v1/ingest/uploads/",
    "/api/v1/ingest/uploads/{upload_id}/",
    "/api/v1/ingest/uploads/{upload_id}/errors/",
}


def test_the_openapi_schema_is_json_without_a_key(db):
    """OpenAPI 3 JSON, no key needed, every endpoint and its headers documented."""
    response = APIClient().get("/api/v1/schema/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) >= API_PATHS
    create = schema["paths"]["/api/v1/ingest/comprehensive/"]["post"]
    headers = {p["name"] for p in create["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    assert create["security"] == [{"ApiKey": []}]  # the key: a security scheme, declared once
    assert {"202", "200", "400", "401", "409", "413", "422", "429"} <= set(create["responses"])
    assert schema["paths"]["/api/v1/ingest/orders/"]["post"]["deprecated"] is True


def test_the_openapi_schema_is_yaml_on_request(db):
    """`?format=yaml` gives the same schema as YAML."""
    response = APIClient().get("/api/v1/schema/", {"format": "yaml"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) >= API_PATHS


def test_healthz_answers_ok(db):
    response = APIClient().get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_reports_database_and_broker_ok(db):
    """Ready: the database answers and the broker accepts a connection."""
    response = APIClient().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_tenants_created_by_the_service_can_upload_at_once(db):
    """A key shown once at creation works on the API straight away."""
    tenant, issued = tenant_create(name="Fresh")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.raw)
    response = post_file(client, "customers_1.ndjson", CUSTOMERS)
    assert response.status_code == 202
    assert Upload.objects.get(id=response.json()["id"]).tenant == tenant


def _schema() -> dict:
    return json.loads(APIClient().get("/api/v1/schema/").content)


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        (COMPREHENSIVE, "post", {"200", "202", "400", "401", "409", "413", "422", "429"}),
        pytest.param(
            LEGACY,
            "post",
            {"200", "202", "400", "401", "409", "413", "422", "429"},
        ),
        pytest.param(
            UPLOADS,
            "get",
            {"200", "401", "429"},
        ),
        pytest.param(
            UPLOADS + "{upload_id}/",
            "get",
            {"200", "401", "404", "429"},
        ),
        pytest.param(
            UPLOADS + "{upload_id}/errors/",
            "get",
            {"200", "401", "404", "429"},
        ),
    ],
    ids=["comprehensive", "legacy", "list", "detail", "errors"],
)
def test_the_schema_documents_every_status_an_operation_can_answer(db, path, method, statuses):
    """Each operation lists the statuses it answers, errors included (issue 3, item 8)."""
    operation = _schema()["paths"][path][method]
    assert statuses <= set(operation["responses"]), sorted(operation["responses"])
    assert operation["security"] == [{"ApiKey": []}]


def test_the_schema_documents_the_legacy_request_body(db):
    """The legacy upload takes the same bodies as the comprehensive one."""
    paths = _schema()["paths"]
    comprehensive = paths[COMPREHENSIVE]["post"]["requestBody"]["content"]
    assert set(paths[LEGACY]["post"]["requestBody"]["content"]) == set(comprehensive)


def test_the_schema_documents_the_response_headers(db):
    """Headers clients rely on are documented on the responses that carry them."""
    paths = _schema()["paths"]
    created = paths[COMPREHENSIVE]["post"]["responses"]
    assert {"Location", "Idempotent-Replayed"} <= set(created["202"].get("headers", {}))
    assert "Retry-After" in created["429"].get("headers", {})
    legacy = paths[LEGACY]["post"]["responses"]["202"]
    assert {"Deprecation", "Link"} <= set(legacy.get("headers", {}))


def test_the_schema_documents_errors_as_problem_json(db):
    """Every 4xx response is described as application/problem+json."""
    for path, operations in _schema()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert PROBLEM in response.get("content", {}), (path, method, status)


def test_readyz_reports_an_unreachable_broker_with_503(db, monkeypatch):
    """Not ready when the broker refuses connections: 503 naming what failed."""
    from main.celery import app

    # a broker address nobody listens on (patching app.conf would leave the resolved URL
    # pinned in the settings after the undo)
    real = app.connection_for_write
    monkeypatch.setattr(app, "connection_for_write", lambda *a, **k: real("redis://127.0.0.1:9/0"))
    response = APIClient().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"]) == ("unavailable", "ok")
    assert body["broker"].startswith("error: ")
