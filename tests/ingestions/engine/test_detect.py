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
