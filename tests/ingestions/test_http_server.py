"""The API behind a real WSGI server (gunicorn) with a real worker: what Django's test
client cannot show, such as a chunked request body."""

import time

import httpx
import pytest

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Blob, Customer, Upload
from apps.tenants.services import tenant_create
from scripts.stack import running_stack
from tests.factories import database_url_of_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_chunked_upload_through_gunicorn_is_stored_whole_and_loaded(tmp_path):
    """A streaming client (Transfer-Encoding: chunked, no Content-Length) is stored byte
    for byte and its rows are loaded by the worker."""
    tenant, issued = tenant_create(name="chunked")
    rows = [
        customer_row(customer_id=uid(f"chunked-{n}"), email=f"c{n}@example.com") for n in range(500)
    ]
    data = ndjson_bytes(rows)

    def body():
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    with running_stack(
        env={"DATABASE_URL": database_url_of_tests()}, workers=1, log_dir=tmp_path
    ) as base:
        response = httpx.post(
            f"{base}/api/v1/ingest/comprehensive/?filename=customers_1.ndjson",
            content=body(),
            headers={"X-API-Key": issued.raw, "Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert "content-length" not in {k.lower() for k in response.request.headers}
        upload = Upload.objects.get(id=response.json()["id"])
        assert (upload.size_bytes, Blob.objects.get(id=upload.blob_id).size_bytes) == (
            len(data),
            len(data),
        )
        deadline = time.monotonic() + 30
        while not Upload.objects.get(id=upload.id).is_terminal:
            assert time.monotonic() < deadline, "the worker did not finish the upload"
            time.sleep(0.1)
    upload.refresh_from_db()
    assert (upload.state, upload.rows_inserted) == ("completed", 500)
    assert Customer.objects.filter(tenant=tenant).count() == 500
