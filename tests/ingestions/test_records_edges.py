"""Live batches at the edges of what a client sends: a mixed element over the line limit,
bytes that are not UTF-8 in an element's type, a `null` record, a UTF-8 BOM before a JSON
array, an array element that is no JSON, compressed bodies; each rejected or read exactly,
never lost or a 500."""

from __future__ import annotations

import gzip
import json

import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, RecordBatch
from apps.ingestions.services import records_merge

pytestmark = pytest.mark.django_db

MIXED = "/api/v1/ingest/records/"
CUSTOMERS = "/api/v1/ingest/records/customers/"
NDJSON = "application/x-ndjson"
JSON = "application/json"


def _post(client, path, body: bytes, content_type=NDJSON):
    return client.generic("POST", path, body, content_type=content_type)


def _element(record: dict) -> bytes:
    return json.dumps({"type": "customers", "record": record}).encode()


def _two(first: bytes, second: bytes, content_type: str) -> bytes:
    """Two elements as a JSON array or as NDJSON lines."""
    if content_type == JSON:
        return b"[" + first + b"," + second + b"]"
    return first + b"\n" + second + b"\n"


@pytest.mark.parametrize("content_type", [NDJSON, JSON])
def test_a_mixed_element_over_the_line_limit_is_rejected_not_lost(
    client, tenant, settings, content_type
):
    """The element is rejected at its position (`line_too_long`); before, it was counted as
    accepted and then loaded nowhere."""
    settings.INGEST_MAX_LINE_BYTES = 400
    small = _element(customer_row(customer_id=uid("a")))
    big = _element(customer_row(customer_id=uid("b"), name="x" * 300))
    assert len(small) < 400 < len(big)
    response = _post(client, MIXED, _two(small, big, content_type), content_type)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["records"], answer["rejected"]) == (2, 1)
    assert [(r["line"], r["field"], r["code"]) for r in answer["rejects"]] == [
        (2, "", "line_too_long")
    ]
    records_merge(tenant_id=tenant.id)
    rows = client.get(answer["url"]).json()["rows"]
    assert (rows["total"], rows["inserted"], rows["rejected"]) == (2, 1, 1)
    loaded = Customer.objects.filter(tenant=tenant).values_list("customer_id", flat=True)
    assert [str(c) for c in loaded] == [uid("a")]


def _record_of(size: int, name: str) -> bytes:
    """A customer record of exactly `size` bytes (its name padded)."""
    record = customer_row(customer_id=uid(name), name="")
    short = len(json.dumps(record, separators=(",", ":")).encode())
    record["name"] = "x" * (size - short)
    data = json.dumps(record, separators=(",", ":")).encode()
    assert len(data) == size
    return data


@pytest.mark.parametrize("content_type", [NDJSON, JSON])
def test_a_record_is_held_to_the_line_limit_inside_its_mixed_element_too(
    client, tenant, settings, content_type
):
    """A record of exactly the line limit loads from a mixed batch, as it does alone as a
    line (its `{"type", "record"}` element is longer: that used to reject it); one byte
    more is `line_too_long`, as alone."""
    settings.INGEST_MAX_LINE_BYTES = 400
    at, over = _record_of(400, "at"), _record_of(401, "over")
    elements = [b'{"type":"customers","record":' + data + b"}" for data in (at, over)]
    response = _post(client, MIXED, _two(*elements, content_type), content_type)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert [(r["line"], r["code"]) for r in answer["rejects"]] == [(2, "line_too_long")]
    alone = _post(client, CUSTOMERS, at + b"\n" + over + b"\n").json()
    assert [(r["line"], r["code"]) for r in alone["rejects"]] == [(2, "line_too_long")]


@pytest.mark.parametrize(
    "bad",
    [b"cust\xffomers", b"\xc0\xaf", b"\xed\xa0\x80", b"customers\xe2\x82"],
    ids=["invalid byte", "overlong", "surrogate", "cut short"],
)
@pytest.mark.parametrize("content_type", [NDJSON, JSON])
def test_an_element_type_that_is_not_utf8_is_an_invalid_json_reject(
    client, tenant, bad, content_type
):
    """The element is `invalid_json`, as the same bytes in its record are; before, 500."""
    good = _element(customer_row())
    wrong = b'{"type":"' + bad + b'","record":{}}'
    response = _post(client, MIXED, _two(good, wrong, content_type), content_type)
    assert response.status_code == 202, response.content
    assert [(r["line"], r["code"]) for r in response.json()["rejects"]] == [(2, "invalid_json")]


def test_a_null_record_is_named_null(client, tenant):
    response = _post(client, CUSTOMERS, b"null\n")
    assert response.status_code == 202, response.content
    reject = response.json()["rejects"][0]
    assert (reject["code"], reject["message"]) == (
        "not_an_object",
        "the line is a JSON null, not an object",
    )


@pytest.mark.parametrize("content_type", [JSON, ""])
def test_a_json_array_after_a_utf8_bom_is_read(client, tenant, content_type):
    """As an NDJSON body's BOM is: by its Content-Type, or known by its first bracket."""
    rows = [customer_row(customer_id=uid("a")), customer_row(customer_id=uid("b"))]
    body = b"\xef\xbb\xbf" + json.dumps(rows).encode()
    response = _post(client, CUSTOMERS, body, content_type)
    assert response.status_code == 202, response.content
    assert (response.json()["records"], response.json()["rejected"]) == (2, 0)


def test_a_gzip_json_array_is_read_as_a_gzip_ndjson_body_is(client, tenant):
    rows = [customer_row(customer_id=uid("a")), customer_row(customer_id=uid("b"))]
    for body, content_type in (
        (gzip.compress(json.dumps(rows).encode()), JSON),
        (ndjson_bytes(rows, compression="gzip"), NDJSON),
    ):
        response = _post(client, CUSTOMERS, body, content_type)
        assert response.status_code == 202, response.content
        assert (response.json()["records"], response.json()["rejected"]) == (2, 0)


@pytest.mark.parametrize("content_type", [NDJSON, JSON])
def test_a_body_that_decompresses_past_the_byte_limit_is_413(
    client, tenant, settings, content_type
):
    """Its decompressed bytes count against `LIVE_MAX_BYTES`, as a plain body's do."""
    settings.LIVE_MAX_BYTES = 2000
    rows = [customer_row(customer_id=uid(f"c{n}")) for n in range(40)]
    plain = json.dumps(rows).encode() if content_type == JSON else ndjson_bytes(rows)
    body = gzip.compress(plain)
    assert len(body) < 2000 < len(plain)
    response = _post(client, CUSTOMERS, body, content_type)
    assert response.status_code == 413, response.content
    assert response.json()["code"] == "decompression_bomb"
    assert not RecordBatch.objects.exists()


@pytest.mark.parametrize(
    "fault",
    [rb'"\udc00x"', b'"a\x01b"', rb'"\q"', b"1 2"],
    ids=["lone surrogate", "control character", "bad escape", "two values"],
)
@pytest.mark.parametrize("path", [CUSTOMERS, MIXED])
def test_an_array_element_that_is_no_json_is_that_records_reject(client, tenant, fault, path):
    """One element that does not decode, in a sound array, is its record's `invalid_json`
    reject and the others are accepted, as the same line in NDJSON would be; the whole
    batch was a 400 `bad_json`, nothing stored."""
    bad = b'{"customer_id": "%s", "name": %s, "email": "b@example.com", "created_at": "2024-01-02"}'
    bad = bad % (uid("b").encode(), fault)
    elements = [json.dumps(customer_row(customer_id=uid(n))).encode() for n in "ac"]
    elements.insert(1, bad)
    if path == MIXED:
        elements = [b'{"type": "customers", "record": ' + e + b"}" for e in elements]
    body = b"[" + b",\n ".join(elements) + b"]"
    response = _post(client, path, body, JSON)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["records"], answer["rejected"]) == (3, 1)
    assert [(r["line"], r["code"]) for r in answer["rejects"]] == [(2, "invalid_json")]
    records_merge(tenant_id=tenant.id)
    loaded = Customer.objects.filter(tenant=tenant).values_list("customer_id", flat=True)
    assert sorted(str(c) for c in loaded) == [uid("a"), uid("c")]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'[{"a": 1},, {"b": 2}]', "element 2 is empty (two commas, or a trailing one)."),
        (b'[{"a": "\x01"},]', "element 2 is empty (two commas, or a trailing one)."),
        (b'[{"a": "\x01"}', "it does not start with '[' and end with ']'."),
        (b'[{"a": "\x01}]', "never ends."),
        (b'{"a": "\x01"}', "The body is not a JSON array: "),
    ],
)
def test_an_array_whose_outline_is_unsound_is_still_a_400(client, tenant, body, detail):
    """Brackets, strings and commas must still make an array of elements: else the batch is
    a 400 `bad_json` that says what is wrong, and nothing is stored."""
    response = _post(client, CUSTOMERS, body, JSON)
    assert (response.status_code, response.json()["code"]) == (400, "bad_json"), response.content
    assert detail in response.json()["detail"]
    assert not RecordBatch.objects.exists()


@pytest.mark.parametrize("compress", [gzip.compress, None], ids=["gzip", "zstd"])
@pytest.mark.parametrize("content_type", ["", "text/plain", "application/octet-stream"])
def test_a_compressed_json_array_without_a_json_type_is_known_by_its_first_bracket(
    client, tenant, compress, content_type
):
    """As a plain one is: the decompressed body's first bracket tells. The compressed bytes
    were looked at, and the array was read as one NDJSON line (a not_an_object reject)."""
    import zstandard

    compress = compress or zstandard.ZstdCompressor().compress
    rows = [customer_row(customer_id=uid("a")), customer_row(customer_id=uid("b"))]
    response = _post(client, CUSTOMERS, compress(json.dumps(rows).encode()), content_type)
    assert response.status_code == 202, response.content
    assert (response.json()["records"], response.json()["rejected"]) == (2, 0)
    lines = compress(ndjson_bytes(rows))  # and NDJSON stays NDJSON
    response = _post(client, CUSTOMERS, lines, content_type)
    assert (response.json()["records"], response.json()["rejected"]) == (2, 0)


@pytest.mark.parametrize(
    ("coding", "compress", "status"),
    [
        ("br", None, 415),
        ("gzip, br", gzip.compress, 415),
        ("deflate", None, 415),
        ("gzip", gzip.compress, 202),
        ("GZIP", gzip.compress, 202),
        ("identity", None, 202),
    ],
)
def test_a_content_encoding_the_service_cannot_read_is_415(
    client, tenant, coding, compress, status
):
    """Its bytes were taken as they came: a brotli body read as NDJSON lines, each a
    reject. gzip and zstd (known by their first bytes) and identity are read."""
    body = ndjson_bytes([customer_row(customer_id=uid("a"))])
    response = client.generic(
        "POST", CUSTOMERS, compress(body) if compress else body,
        content_type=NDJSON, HTTP_CONTENT_ENCODING=coding,
    )  # fmt: skip
    assert response.status_code == status, response.content
    if status == 415:
        assert response.json()["code"] == "unsupported_content_encoding"
        assert not RecordBatch.objects.exists()
    else:
        assert (response.json()["records"], response.json()["rejected"]) == (1, 0)


def test_an_integer_too_long_for_python_to_read_is_kept_in_a_live_batch_too(client, tenant):
    """As in a file: the metadata number of 4401 digits is kept exactly, not invalid_json."""
    long = "1" + "0" * 4400
    row = customer_row(customer_id=uid("long"))
    row.pop("metadata", None)
    line = json.dumps(row).encode()[:-1] + f', "metadata": {{"n": {long}}}}}'.encode()
    answer = _post(client, CUSTOMERS, line + b"\n").json()
    assert (answer["records"], answer["rejected"]) == (1, 0), answer
    records_merge(tenant_id=tenant.id)
    stored = Customer.objects.get(tenant=tenant, customer_id=uid("long")).metadata
    assert str(stored["n"]) == long
