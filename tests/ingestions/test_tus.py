"""tus 1.0 at /api/v1/ingest/tus/ through Django's test client: discovery, creation (with
upload), HEAD/PATCH, checksum, termination, expiration, version and tenant checks."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.http import http_date
from rest_framework.test import APIClient

from apps.ingestions.engine.testing import ndjson_bytes, product_row, uid
from apps.ingestions.models import Blob, BlobChunk, Upload, UploadSession

TUS = "/api/v1/ingest/tus/"
SERVER = "http://testserver"
CHUNK = "application/offset+octet-stream"
V = {"Tus-Resumable": "1.0.0"}

DATA = ndjson_bytes([product_row(product_id=uid(f"p{n}"), sku=f"SKU-{n}") for n in range(200)])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def digest(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def create(client, *, length=None, metadata=None, **headers):
    length = len(DATA) if length is None else length
    metadata = metadata if metadata is not None else f"filename {b64('products_1.ndjson')}"
    return client.post(
        TUS, headers={**V, "Upload-Length": str(length), "Upload-Metadata": metadata, **headers}
    )


def token_of(response) -> str:
    return response["Location"].rsplit("/", 1)[1]


def patch(client, token, data, offset, **headers):
    return client.generic(
        "PATCH",
        f"{TUS}{token}",
        data,
        content_type=CHUNK,
        headers={**V, "Upload-Offset": str(offset), **headers},
    )


def test_options_discovers_the_server_without_a_key(db):
    """OPTIONS needs no key and names the version, extensions, size limit and checksums."""
    response = APIClient().options(TUS)
    assert response.status_code == 204
    assert response["Tus-Resumable"] == "1.0.0"
    assert response["Tus-Version"] == "1.0.0"
    assert response["Tus-Extension"] == (
        "creation,creation-with-upload,checksum,termination,expiration"
    )
    assert response["Tus-Max-Size"] == str(5 * 1024**3)
    assert response["Tus-Checksum-Algorithm"] == "md5,sha1,sha256,sha512"


def test_creation_answers_201_with_the_upload_url_and_its_expiry(client, tenant):
    """POST with Upload-Length and Upload-Metadata: 201, Location is /tus/{token}, and the
    token is a session token with the file name, type and size."""
    metadata = f"filename {b64('export.ndjson')},type {b64('products')},flag"
    response = create(client, metadata=metadata)
    assert response.status_code == 201, response.content
    token = token_of(response)
    assert response["Location"] == f"{SERVER}{TUS}{token}"
    assert response["Tus-Resumable"] == "1.0.0"
    session = UploadSession.objects.get(token=token)
    assert (session.tenant_id, session.filename, session.record_type, session.size) == (
        tenant.id,
        "export.ndjson",
        "products",
        len(DATA),
    )
    assert response["Upload-Expires"] == http_date(session.expires_at.timestamp())
    status = client.get(f"/api/v1/ingest/sessions/{token}/status/").json()
    assert (status["token"], status["state"], status["offset"]) == (token, "open", 0)


def test_head_gives_the_offset_length_and_metadata(client):
    """HEAD answers where to resume: Upload-Offset, Upload-Length, the metadata as sent,
    and no caching."""
    metadata = f"filename {b64('products_1.ndjson')}"
    token = token_of(create(client, metadata=metadata))
    patch(client, token, DATA[:1000], 0)
    response = client.head(f"{TUS}{token}", headers=V)
    assert response.status_code == 200
    assert (response["Upload-Offset"], response["Upload-Length"]) == ("1000", str(len(DATA)))
    assert response["Upload-Metadata"] == metadata
    assert response["Cache-Control"] == "no-store"
    assert response["Tus-Resumable"] == "1.0.0"


def test_patches_in_order_complete_the_upload_and_queue_it(client, tenant):
    """PATCH chunks: 204 with the new offset; the last one creates the upload, reported by
    the session's status and the Upload-Result header."""
    token = token_of(create(client))
    first = patch(client, token, DATA[:4096], 0)
    assert (first.status_code, first["Upload-Offset"]) == (204, "4096")
    last = patch(client, token, DATA[4096:], 4096)
    assert (last.status_code, last["Upload-Offset"]) == (204, str(len(DATA)))
    upload = Upload.objects.get(tenant=tenant)
    assert last["Upload-Result"] == f"{SERVER}/api/v1/ingest/uploads/{upload.id}/"
    assert (upload.record_type, upload.sha256, upload.size_bytes, upload.state) == (
        "products",
        hashlib.sha256(DATA).hexdigest(),
        len(DATA),
        "queued",
    )
    status = client.get(f"/api/v1/ingest/sessions/{token}/status/").json()
    assert (status["state"], status["upload_id"]) == ("complete", str(upload.id))


def test_creation_with_upload_stores_the_first_bytes(client):
    """A creation request may carry the first chunk; Upload-Offset says how much of it
    was stored."""
    response = client.post(
        TUS,
        DATA[:500],
        content_type=CHUNK,
        headers={
            **V,
            "Upload-Length": str(len(DATA)),
            "Upload-Metadata": f"filename {b64('products_1.ndjson')}",
        },
    )
    assert (response.status_code, response["Upload-Offset"]) == (201, "500")
    assert UploadSession.objects.get(token=token_of(response)).offset == 500
    assert "Upload-Result" not in response


def test_a_creation_with_the_whole_file_answers_the_uploads_url(client):
    """Every byte in the creation: its 201 carries `Upload-Result`, as the PATCH that
    completes a file does (it had none: the client had no way to the upload)."""
    response = client.post(
        TUS, DATA, content_type=CHUNK,
        headers={**V, "Upload-Length": str(len(DATA)),
                 "Upload-Metadata": f"filename {b64('products_1.ndjson')}"},
    )  # fmt: skip
    assert (response.status_code, response["Upload-Offset"]) == (201, str(len(DATA)))
    session = UploadSession.objects.get(token=token_of(response))
    assert (
        response["Upload-Result"] == f"http://testserver/api/v1/ingest/uploads/{session.upload_id}/"
    )


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("text/plain", DATA[:500], 415, "unsupported_media_type"),
        (CHUNK, DATA + b"more", 400, "past_declared_size"),
    ],
)
def test_a_creation_with_upload_refused_leaves_no_session(client, content_type, body, status, code):
    """A creation whose first chunk is refused answers without a Location: no session, no
    bytes are left behind that nobody could resume."""
    response = client.post(
        TUS,
        body,
        content_type=content_type,
        headers={
            **V,
            "Upload-Length": str(len(DATA)),
            "Upload-Metadata": f"filename {b64('products_1.ndjson')}",
        },
    )
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    assert "Location" not in response
    assert (UploadSession.objects.count(), Blob.objects.count(), BlobChunk.objects.count()) == (
        0,
        0,
        0,
    )


def test_a_patch_at_the_wrong_offset_is_409(client):
    """tus core: a mismatching Upload-Offset is 409 Conflict and stores nothing."""
    token = token_of(create(client))
    patch(client, token, DATA[:100], 0)
    response = patch(client, token, DATA[200:300], 200)
    assert (response.status_code, response["Upload-Offset"]) == (409, "100")
    assert UploadSession.objects.get(token=token).offset == 100


def test_a_patch_must_be_offset_octet_stream(client):
    """tus core: any other Content-Type is 415."""
    token = token_of(create(client))
    response = client.generic(
        "PATCH",
        f"{TUS}{token}",
        DATA,
        content_type="application/octet-stream",
        headers={**V, "Upload-Offset": "0"},
    )
    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
def test_a_chunk_with_a_matching_checksum_is_stored(client, algorithm):
    """checksum extension: Upload-Checksum of the chunk, verified before it is kept."""
    token = token_of(create(client))
    response = patch(
        client, token, DATA[:777], 0, **{"Upload-Checksum": digest(algorithm, DATA[:777])}
    )
    assert (response.status_code, response["Upload-Offset"]) == (204, "777")


def test_a_chunk_with_a_wrong_checksum_is_460_and_not_stored(client):
    """checksum extension: a mismatch is 460 Checksum Mismatch and nothing of the chunk is
    kept; the same chunk sent correctly then goes through."""
    token = token_of(create(client))
    patch(client, token, DATA[:100], 0)
    response = patch(
        client, token, DATA[100:900], 100, **{"Upload-Checksum": digest("sha256", b"x")}
    )
    assert response.status_code == 460
    assert response.reason_phrase == "Checksum Mismatch"
    assert response.json()["code"] == "checksum_mismatch"
    session = UploadSession.objects.get(token=token)
    assert session.offset == 100
    assert BlobChunk.objects.filter(blob_id=session.blob_id).count() == 1
    again = patch(
        client, token, DATA[100:900], 100, **{"Upload-Checksum": digest("sha256", DATA[100:900])}
    )
    assert (again.status_code, again["Upload-Offset"]) == (204, "900")


def test_an_unsupported_checksum_algorithm_is_400(client):
    token = token_of(create(client))
    response = patch(client, token, DATA[:10], 0, **{"Upload-Checksum": "crc32 AAAA"})
    assert (response.status_code, response.json()["code"]) == (400, "unsupported_checksum")


@pytest.mark.parametrize(
    "header", ["sha256", "sha256 ", "sha256 ***", "sha256 AAAA", "md5 " + "A" * 44]
)
def test_a_checksum_without_a_digest_of_its_algorithm_s_size_is_400(client, header):
    """No digest, one that is not base64, or one of the wrong length: 400, not a mismatch."""
    token = token_of(create(client))
    response = patch(client, token, DATA[:10], 0, **{"Upload-Checksum": header})
    assert (response.status_code, response.json()["code"]) == (400, "bad_checksum")
    assert UploadSession.objects.get(token=token).offset == 0


def test_a_non_ascii_digit_in_a_header_is_quoted_as_it_was_sent(client):
    """WSGI gives headers as Latin-1: the detail shows the client's own characters."""
    response = client.post(
        TUS,
        headers={**V, "Upload-Length": "٣".encode().decode("latin-1"), "Upload-Metadata": ""},
    )
    assert response.status_code == 400
    assert response.json()["detail"].endswith("not '٣'.")


def test_termination_deletes_the_upload_and_its_bytes(client):
    """termination extension: DELETE is 204; then the upload is gone (404)."""
    token = token_of(create(client))
    patch(client, token, DATA[:100], 0)
    blob_id = UploadSession.objects.get(token=token).blob_id
    response = client.delete(f"{TUS}{token}", headers=V)
    assert response.status_code == 204
    assert client.head(f"{TUS}{token}", headers=V).status_code == 404
    assert not Blob.objects.filter(id=blob_id).exists()


def test_an_expired_upload_is_gone(client):
    """expiration extension: past Upload-Expires, HEAD and PATCH answer 410."""
    token = token_of(create(client))
    UploadSession.objects.filter(token=token).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert client.head(f"{TUS}{token}", headers=V).status_code == 410
    assert patch(client, token, DATA, 0).status_code == 410


def test_a_request_without_tus_resumable_is_412(client):
    """tus core: a request without the protocol version is 412 naming the version."""
    response = client.post(TUS, headers={"Upload-Length": "10"})
    assert response.status_code == 412
    assert response["Tus-Version"] == "1.0.0"
    assert response.json()["code"] == "tus_version"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Upload-Length": "", "Upload-Defer-Length": "1"}, "defer_length"),
        ({"Upload-Length": "abc"}, "bad_header"),
        ({"Upload-Metadata": "filename ***"}, "bad_metadata"),
        ({"Upload-Metadata": f"type {b64('products')}"}, "missing_filename"),
        ({"Upload-Metadata": f"filename {b64('x.ndjson')},type {b64('invoices')}"}, "unknown_type"),
        (
            {"Upload-Metadata": f"filename {b64('customers.ndjson')},note {b64('x' * 3100)}"},
            "metadata_too_long",  # 4,160 characters: kept whole or not at all
        ),
    ],
)
def test_a_bad_creation_request_is_400(client, headers, code):
    """Deferred length, a bad length, undecodable metadata, no file name, a wrong type."""
    base = {**V, "Upload-Length": "10", "Upload-Metadata": f"filename {b64('customers.ndjson')}"}
    response = client.post(TUS, headers={**base, **headers})
    assert (response.status_code, response.json()["code"]) == (400, code), response.content
    assert not UploadSession.objects.exists()


def test_a_mime_type_in_the_metadata_is_not_taken_for_a_record_type(client):
    """Browser tus clients send `type` as a MIME type: ignored, the file name decides."""
    metadata = f"filename {b64('products_1.ndjson')},type {b64('application/x-ndjson')}"
    response = create(client, metadata=metadata)
    assert response.status_code == 201
    assert UploadSession.objects.get(token=token_of(response)).record_type == ""


def test_an_upload_over_the_size_limit_is_413(client):
    response = create(client, length=6 * 1024**3)
    assert response.status_code == 413


def test_another_tenants_upload_is_not_found(client, client_for, other_tenant):
    """HEAD, PATCH and DELETE of another tenant's tus upload are 404."""
    token = token_of(create(client))
    other = client_for(other_tenant)
    assert other.head(f"{TUS}{token}", headers=V).status_code == 404
    assert patch(other, token, DATA, 0).status_code == 404
    assert other.delete(f"{TUS}{token}", headers=V).status_code == 404
    assert UploadSession.objects.get(token=token).offset == 0


def test_tus_needs_a_key(db):
    """Everything but OPTIONS needs X-API-Key: 401."""
    response = APIClient().post(TUS, headers={**V, "Upload-Length": "10"})
    assert response.status_code == 401
    assert response["Tus-Resumable"] == "1.0.0"
