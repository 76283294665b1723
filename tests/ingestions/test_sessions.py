"""Resumable upload sessions (SPEC section 5), through Django's test client: create, chunks
in order and out of order, duplicates, resume, checksum mismatch, expiry, other tenants.
No worker runs here: a completed session's upload stays `queued`."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.core.models import IdempotencyKey
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import (
    Blob,
    BlobChunk,
    Upload,
    UploadSession,
    UploadState,
)
from apps.ingestions.services import session_expire

SESSIONS = "/api/v1/ingest/sessions/"
COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
SERVER = "http://testserver"
PROBLEM = "application/problem+json"
CHUNK = "application/offset+octet-stream"

DATA = ndjson_bytes(
    [customer_row(customer_id=uid(f"s{n}"), email=f"s{n}@example.com") for n in range(300)]
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(client, **body):
    body = {"filename": "customers_1.ndjson", "size": len(DATA), **body}
    return client.post(SESSIONS, body, format="json")


def send(client, token, data: bytes, offset: int, *, via: str = "patch"):
    """One chunk: PATCH on the session, or POST to the comprehensive endpoint."""
    headers = {"Upload-Offset": str(offset)}
    if via == "patch":
        return client.patch(f"{SESSIONS}{token}/", data, content_type=CHUNK, headers=headers)
    return client.post(
        COMPREHENSIVE,
        data,
        content_type="application/octet-stream",
        headers={**headers, "Upload-Token": token},
    )


def stored_bytes(blob_id: int) -> bytes:
    """The blob's bytes, read on the test's own connection (its transaction is open)."""
    chunks = BlobChunk.objects.filter(blob_id=blob_id).order_by("seq")
    return b"".join(bytes(data) for data in chunks.values_list("data", flat=True))


def test_creating_a_session_answers_201_with_the_session_resource(client):
    """The answer is the session resource of SPEC 5, at offset 0, open, expiring in 24 h."""
    response = create(client, sha256=sha256(DATA).upper(), type="customers")
    assert response.status_code == 201, response.content
    body = response.json()
    session = UploadSession.objects.get(token=body["token"])
    url = f"{SERVER}{SESSIONS}{session.token}/"
    assert body == {
        "token": session.token,
        "url": url,
        "filename": "customers_1.ndjson",
        "size": len(DATA),
        "offset": 0,
        "state": "open",
        "type": "customers",
        "sha256": sha256(DATA),
        "strict": False,
        "dry_run": False,
        "error": None,
        "upload_id": None,
        "upload_url": None,
        "tus_url": f"{SERVER}/api/v1/ingest/tus/{session.token}",
        "expires_at": session.expires_at.isoformat().replace("+00:00", "Z"),
        "created_at": session.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert (response["Location"], response["Upload-Offset"]) == (url, "0")
    assert abs(session.expires_at - timezone.now() - timedelta(hours=24)) < timedelta(minutes=1)


def test_a_size_of_hundreds_of_digits_is_not_quoted_in_full(client):
    """A 401-digit size is over the limit (413), and the answer says how many digits it
    has instead of repeating them all."""
    response = create(client, size=10**400)
    assert response.status_code == 413, response.content
    assert response.json()["detail"] == (
        f"The file is a size of 401 digits; the limit is {settings.INGEST_MAX_UPLOAD_BYTES}."
    )
    assert not UploadSession.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"filename": ""}, 400, "invalid"),
        ({"size": 0}, 400, "invalid"),
        ({"size": "ten"}, 400, "invalid"),
        ({"sha256": "abc"}, 400, "invalid"),
        ({"type": "invoices"}, 400, "invalid"),
        ({"size": 6 * 1024**3}, 413, "payload_too_large"),
    ],
)
def test_a_bad_session_request_is_refused_with_a_problem(client, body, status, code):
    """Missing or wrong fields are 400 and a size over the upload limit is 413, as
    problem+json; no session is opened."""
    response = create(client, **body)
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == code
    assert not UploadSession.objects.exists()


@pytest.mark.parametrize("via", ["patch", "comprehensive"])
def test_chunks_in_order_complete_the_file_and_queue_its_upload(client, tenant, via):
    """Chunks at the right offsets answer 200 with the new offset; the last one answers 202
    with the upload, whose bytes are exactly the file."""
    token = create(client, sha256=sha256(DATA)).json()["token"]
    cuts = [0, 1000, 5000, len(DATA)]
    for start, end in zip(cuts, cuts[1:-1], strict=False):
        response = send(client, token, DATA[start:end], start, via=via)
        assert response.status_code == 200, response.content
        assert response["Upload-Offset"] == str(end)
        assert (response.json()["offset"], response.json()["state"]) == (end, "open")
    response = send(client, token, DATA[cuts[-2] :], cuts[-2], via=via)
    assert response.status_code == 202, response.content
    assert response["Upload-Offset"] == str(len(DATA))
    upload = Upload.objects.get(id=response.json()["id"])
    assert response.json()["state"] == "queued"
    assert (upload.tenant_id, upload.record_type, upload.filename) == (
        tenant.id,
        "customers",
        "customers_1.ndjson",
    )
    assert (upload.sha256, upload.size_bytes, upload.state) == (
        sha256(DATA),
        len(DATA),
        UploadState.QUEUED,
    )
    assert stored_bytes(upload.blob_id) == DATA
    status = client.get(f"{SESSIONS}{token}/status/").json()
    assert (status["state"], status["offset"], status["upload_id"]) == (
        "complete",
        len(DATA),
        str(upload.id),
    )
    assert status["upload_url"] == f"{SERVER}/api/v1/ingest/uploads/{upload.id}/"


def test_a_chunk_at_the_wrong_offset_is_409_with_the_current_offset(client):
    """Out of order: 409, the offset to send from in the header and the body; nothing
    of that chunk is stored."""
    token = create(client).json()["token"]
    assert send(client, token, DATA[:100], 0).status_code == 200
    response = send(client, token, DATA[500:900], 500)
    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert response["Upload-Offset"] == "100"
    body = response.json()
    assert (body["code"], body["offset"]) == ("offset_mismatch", 100)
    assert body["detail"] == (
        "This chunk starts at offset 500, but the session has 100 bytes: send from offset 100."
    )
    session = UploadSession.objects.get(token=token)
    assert (session.offset, stored_bytes(session.blob_id)) == (100, DATA[:100])


def test_a_duplicate_chunk_is_refused_and_the_file_stays_exact(client):
    """A chunk sent twice (a retry after a lost answer) is a 409 pointing past it; the
    transfer goes on and the file is stored once, byte for byte."""
    token = create(client).json()["token"]
    assert send(client, token, DATA[:2000], 0).status_code == 200
    again = send(client, token, DATA[:2000], 0)
    assert (again.status_code, again["Upload-Offset"]) == (409, "2000")
    last = send(client, token, DATA[2000:], 2000)
    assert last.status_code == 202
    assert stored_bytes(Upload.objects.get(id=last.json()["id"]).blob_id) == DATA


def test_an_interrupted_transfer_resumes_from_the_offset_resume_gives(client):
    """After a break, resume answers the offset to send from; sending the rest from there
    completes the file."""
    token = create(client).json()["token"]
    send(client, token, DATA[:3000], 0)
    response = client.post(f"{SESSIONS}{token}/resume/")
    assert response.status_code == 200
    assert (response.json()["offset"], response["Upload-Offset"]) == (3000, "3000")
    last = send(client, token, DATA[3000:], response.json()["offset"])
    assert last.status_code == 202
    assert stored_bytes(Upload.objects.get(id=last.json()["id"]).blob_id) == DATA


def test_a_chunk_past_the_declared_size_is_refused(client):
    """More bytes than announced: 400, and nothing of the chunk is stored."""
    token = create(client, size=10).json()["token"]
    response = send(client, token, DATA[:11], 0)
    assert response.status_code == 400
    assert response.json()["code"] == "past_declared_size"
    assert UploadSession.objects.get(token=token).offset == 0


def test_a_checksum_mismatch_fails_the_session_and_loads_nothing(client):
    """The last byte reveals a sha256 other than announced: 422, the session is failed
    with a clear error, its bytes are deleted and no upload exists."""
    token = create(client, sha256="0" * 64).json()["token"]
    send(client, token, DATA[:100], 0)
    blob_id = UploadSession.objects.get(token=token).blob_id
    response = send(client, token, DATA[100:], 100)
    assert response.status_code == 422, response.content
    detail = (
        f"the file's sha256 is {sha256(DATA)}, not the {'0' * 64} announced; nothing was loaded"
    )
    assert response.json() == {
        "type": "about:blank",
        "title": "Unprocessable request",
        "status": 422,
        "detail": f"Checksum mismatch: {detail}.",
        "code": "checksum_mismatch",
        "request_id": response["X-Request-Id"],
    }
    status = client.get(f"{SESSIONS}{token}/status/").json()
    assert (status["state"], status["error"], status["upload_id"]) == (
        "failed",
        {"code": "checksum_mismatch", "detail": detail},
        None,
    )
    assert not Upload.objects.exists()
    assert not Blob.objects.filter(id=blob_id).exists()
    assert not BlobChunk.objects.filter(blob_id=blob_id).exists()
    again = send(client, token, b"x", len(DATA))
    assert (again.status_code, again.json()["code"]) == (409, "session_failed")
    resumed = client.post(f"{SESSIONS}{token}/resume/")
    assert (resumed.status_code, resumed.json()["code"]) == (409, "session_failed")


def test_identical_bytes_already_received_give_back_the_earlier_upload(client):
    """A session carrying a file the tenant already sent ends on the earlier upload (200),
    and its own copy of the bytes is dropped."""
    first = create(client).json()["token"]
    earlier = send(client, first, DATA, 0)
    assert earlier.status_code == 202
    second = create(client).json()["token"]
    blob_id = UploadSession.objects.get(token=second).blob_id
    response = send(client, second, DATA, 0)
    assert response.status_code == 200
    assert response.json()["id"] == earlier.json()["id"]
    assert Upload.objects.count() == 1
    assert not Blob.objects.filter(id=blob_id).exists()


def test_an_undecidable_type_fails_the_session_clearly(client):
    """A file whose name and rows say nothing of its type: 400 on the last chunk, and the
    session is failed."""
    data = b'{"something": 1}\n'
    token = create(client, filename="data.ndjson", size=len(data)).json()["token"]
    response = send(client, token, data, 0)
    assert (response.status_code, response.json()["code"]) == (400, "unknown_type")
    assert UploadSession.objects.get(token=token).state == "failed"


def test_an_expired_session_answers_410_and_the_periodic_job_deletes_its_bytes(client):
    """Past its expiry a session takes no chunk (410); the periodic job marks it expired
    and deletes the bytes it held."""
    token = create(client).json()["token"]
    send(client, token, DATA[:100], 0)
    session = UploadSession.objects.get(token=token)
    assert session_expire(now=session.expires_at - timedelta(seconds=1)) == 0
    assert session_expire(now=session.expires_at + timedelta(seconds=1)) == 1
    session.refresh_from_db()
    assert (session.state, session.blob_id) == ("expired", None)
    assert not BlobChunk.objects.exists()
    response = send(client, token, DATA[100:], 100)
    assert response.status_code == 410
    assert response.json()["code"] == "session_expired"
    assert client.get(f"{SESSIONS}{token}/status/").json()["state"] == "expired"
    assert client.post(f"{SESSIONS}{token}/resume/").status_code == 410


def test_a_session_past_its_expiry_is_expired_on_the_next_request(client):
    """No need to wait for the job: the first request after the expiry sees it expired."""
    token = create(client).json()["token"]
    UploadSession.objects.filter(token=token).update(expires_at=timezone.now())
    response = send(client, token, DATA, 0)
    assert response.status_code == 410
    assert UploadSession.objects.get(token=token).state == "expired"


def test_another_tenants_token_is_not_found(client, client_for, other_tenant):
    """Status, chunks, resume and delete of another tenant's session all answer 404."""
    token = create(client).json()["token"]
    other = client_for(other_tenant)
    assert other.get(f"{SESSIONS}{token}/status/").status_code == 404
    assert other.get(f"{SESSIONS}{token}/").status_code == 404
    assert send(other, token, DATA, 0).status_code == 404
    assert send(other, token, DATA, 0, via="comprehensive").status_code == 404
    assert other.post(f"{SESSIONS}{token}/resume/").status_code == 404
    assert other.delete(f"{SESSIONS}{token}/").status_code == 404
    assert UploadSession.objects.get(token=token).offset == 0


def test_a_chunk_needs_an_offset_and_raw_bytes(client):
    """No Upload-Offset, a bad one, or a form body: 400 with a clear detail."""
    token = create(client).json()["token"]
    no_offset = client.patch(f"{SESSIONS}{token}/", DATA, content_type=CHUNK)
    assert (no_offset.status_code, no_offset.json()["code"]) == (400, "no_offset")
    bad = client.patch(
        f"{SESSIONS}{token}/", DATA, content_type=CHUNK, headers={"Upload-Offset": "-1"}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_offset")
    form = client.patch(
        f"{SESSIONS}{token}/",
        "a=1",
        content_type="application/x-www-form-urlencoded",
        headers={"Upload-Offset": "0"},
    )
    assert (form.status_code, form.json()["code"]) == (400, "bad_chunk_type")


def test_session_creation_honours_idempotency_key(client):
    """The same Idempotency-Key and body give back the same session; another body is 422."""
    headers = {"Idempotency-Key": "session-1"}
    first = client.post(
        SESSIONS, {"filename": "customers_1.ndjson", "size": 10}, format="json", headers=headers
    )
    again = client.post(
        SESSIONS, {"filename": "customers_1.ndjson", "size": 10}, format="json", headers=headers
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert UploadSession.objects.count() == 1
    other = client.post(
        SESSIONS, {"filename": "customers_1.ndjson", "size": 11}, format="json", headers=headers
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_mismatch")


def test_session_creation_with_a_key_in_flight_is_409(client, tenant, key_in_flight):
    """The same Idempotency-Key while its first request still runs: 409, no session."""
    key_in_flight(tenant, "busy")
    response = client.post(
        SESSIONS,
        {"filename": "customers_1.ndjson", "size": 10},
        format="json",
        headers={"Idempotency-Key": "busy"},
    )
    assert (response.status_code, response.json()["code"]) == (409, "idempotency_in_flight")
    assert not UploadSession.objects.exists()


def test_a_refused_session_creation_frees_its_key(client, tenant, settings):
    """A session the service refuses (here: over the size limit, 413) does not keep its
    Idempotency-Key: the corrected retry creates the session."""
    settings.INGEST_MAX_UPLOAD_BYTES = 100
    headers = {"Idempotency-Key": "retry-me"}
    body = {"filename": "customers_1.ndjson", "size": 101}
    refused = client.post(SESSIONS, body, format="json", headers=headers)
    assert refused.status_code == 413
    assert not IdempotencyKey.objects.filter(tenant=tenant, key="retry-me").exists()
    accepted = client.post(SESSIONS, body | {"size": 100}, format="json", headers=headers)
    assert accepted.status_code == 201
    assert "Idempotent-Replayed" not in accepted


def test_deleting_a_session_forgets_it_and_its_bytes(client):
    """DELETE on the session: 204; its bytes are gone and it is not found any more."""
    token = create(client).json()["token"]
    send(client, token, DATA[:100], 0)
    blob_id = UploadSession.objects.get(token=token).blob_id
    assert client.delete(f"{SESSIONS}{token}/").status_code == 204
    assert client.get(f"{SESSIONS}{token}/status/").status_code == 404
    assert not Blob.objects.filter(id=blob_id).exists()


def test_the_schema_documents_the_session_endpoints(client):
    """Every session operation is in the OpenAPI schema."""
    schema = json.loads(client.get("/api/v1/schema/").content)
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "sessions_create",
        "sessions_chunk",
        "sessions_status",
        "sessions_resume",
        "sessions_retrieve",
        "sessions_destroy",
        "tus_create",
        "tus_head",
        "tus_patch",
        "tus_terminate",
    } <= operations


def test_a_chunk_while_another_is_being_received_is_409_busy(client):
    """Two writers on one session: the second is refused (409, the offset so far) rather
    than interleaving bytes."""
    import psycopg

    from tests.factories import database_url_of_tests

    token = create(client).json()["token"]
    with psycopg.connect(database_url_of_tests(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended('session:' || %s, 0))", (token,))
        response = send(client, token, DATA, 0)
    assert (response.status_code, response.json()["code"]) == (409, "session_busy")
    assert response["Upload-Offset"] == "0"
    assert UploadSession.objects.get(token=token).offset == 0


def test_a_chunk_after_the_last_byte_is_409_complete(client):
    """The last chunk sent again (its answer was lost) is 409 with the full offset; the
    session's status gives the upload."""
    token = create(client).json()["token"]
    done = send(client, token, DATA, 0)
    again = send(client, token, DATA, 0)
    assert (again.status_code, again.json()["code"], again["Upload-Offset"]) == (
        409,
        "session_complete",
        str(len(DATA)),
    )
    status = client.get(f"{SESSIONS}{token}/status/").json()
    assert status["upload_id"] == done.json()["id"]


def test_the_session_expiry_job_is_scheduled(settings):
    """Celery beat runs the expiry job, and the TTL defaults to 24 hours."""
    entry = settings.CELERY_BEAT_SCHEDULE["session-expire"]
    assert entry["task"] == "apps.ingestions.tasks.session_expire_task"
    assert entry["schedule"] <= 3600
    assert settings.INGEST_SESSION_TTL_SECONDS == 24 * 3600
