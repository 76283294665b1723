"""Record type detection: explicit type, then file name prefix (longest match), then the keys
of the first rows (SPEC 4)."""

from __future__ import annotations

import io

import pytest

from apps.core.errors import UnknownRecordTypeError
from apps.ingestions.engine import detect_record_type
from apps.ingestions.engine.testing import (
    customer_row,
    ndjson_bytes,
    order_item_row,
    order_row,
    product_row,
    uid,
)
from apps.ingestions.models import Upload


@pytest.mark.parametrize(
    ("filename", "explicit", "data", "expected"),
    [
        ("orders_2024.ndjson", None, b"", "orders"),
        ("order_items_2024.ndjson", None, b"", "order_items"),  # longest prefix wins
        ("order_items.jsonl.zst", None, b"", "order_items"),
        ("ORDERS-1.NDJSON", None, b"", "orders"),
        ("exports/products_1.ndjson", None, b"", "products"),
        ("customers_1.ndjson", "orders", b"", "orders"),  # explicit wins over the name
        ("customers_1.ndjson", "bogus", b"", None),
        ("customers2024.ndjson", None, ndjson_bytes([order_row()]), "orders"),
        ("export.ndjson", None, ndjson_bytes([customer_row()]), "customers"),
        ("export.ndjson", None, ndjson_bytes([product_row()]), "products"),
        (
            "export.ndjson.gz",
            None,
            ndjson_bytes([order_item_row()], compression="gzip"),
            "order_items",
        ),
        ("export.ndjson", None, b"\n[1]\n{oops\n" + ndjson_bytes([product_row()]), "products"),
        ("export.ndjson", None, b'{"id": 1}\n', None),
        ("export.ndjson", None, b"", None),
    ],
)
def test_the_record_type_is_decided_by_type_then_name_then_keys(filename, explicit, data, expected):
    """An explicit type wins, then the longest file name prefix, then the first rows' keys;
    None when nothing decides it."""
    assert detect_record_type(filename=filename, explicit=explicit, stream=io.BytesIO(data)) == (
        expected
    )


@pytest.mark.parametrize(
    ("filename", "explicit"),
    [("export.ndjson", None), ("customers_1.ndjson", "invoices")],
)
def test_an_undecidable_or_unknown_type_is_refused_and_nothing_is_recorded(
    tenant, ndjson, load, filename, explicit
):
    """The service refuses a file whose type nothing decides, or an unknown explicit type."""
    path = ndjson(filename, [{"id": 1}])
    with pytest.raises(UnknownRecordTypeError):
        load(tenant, path, type=explicit)
    assert Upload.objects.count() == 0


def test_a_file_named_for_no_type_loads_by_its_keys(tenant, ndjson, load):
    """A file without a type prefix is typed by its rows and loads normally."""
    upload = load(tenant, ndjson("export.ndjson", [customer_row()]))
    assert (upload.record_type, upload.state, upload.rows_inserted) == ("customers", "completed", 1)


def _incompressible_customers(count: int) -> bytes:
    """Customers whose names are random text: compressed, about a third of their size."""
    import random
    import string

    rng = random.Random(7)
    names = ("".join(rng.choices(string.ascii_letters, k=120)) for _ in range(count))
    rows = [customer_row(customer_id=uid(f"r{n}"), name=name) for n, name in enumerate(names)]
    return ndjson_bytes(rows)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_the_first_rows_of_a_compressed_file_cut_anywhere_tell_its_type(compression):
    """A blob's head (its first 256 KiB) of a file that compresses less than 4:1 ends in
    the middle of its compressed stream: its rows up to there decide; before, the cut
    stream's error made the type unknown."""
    from apps.ingestions.services.storage import HEAD_BYTES

    plain = _incompressible_customers(6000)
    data = (
        __import__("gzip").compress(plain)
        if compression == "gzip"
        else __import__("zstandard").ZstdCompressor().compress(plain)
    )
    assert len(data) > HEAD_BYTES
    assert len(plain) < 4 * len(data)
    for cut in (HEAD_BYTES, 128 * 1024 + 100):  # past zstd's first block
        head = io.BytesIO(data[:cut])
        assert detect_record_type(filename="export.ndjson", explicit=None, stream=head) == (
            "customers"
        ), cut
    assert (
        detect_record_type(filename="export", explicit=None, stream=io.BytesIO(data[:20])) is None
    )


@pytest.mark.django_db(transaction=True)
def test_a_compressed_upload_named_for_no_type_is_told_by_its_first_rows(client_for):
    """Through the API, whole and received as it arrives: 202 as customers, loaded."""
    import gzip

    from apps.ingestions.services import upload_run
    from apps.tenants.services import tenant_create

    tenant, _ = tenant_create(name="Unnamed")
    client = client_for(tenant)
    data = gzip.compress(_incompressible_customers(6000))
    response = client.generic(
        "POST", "/api/v1/ingest/comprehensive/?filename=export.ndjson.gz", data
    )
    assert response.status_code == 202, response.content
    assert response.json()["type"] == "customers"
    done = upload_run(upload_id=response.json()["id"])
    assert (done.state, done.rows_inserted) == ("completed", 6000)
