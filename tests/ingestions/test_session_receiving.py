"""Process while receiving for resumable sessions (and tus, which is one): a big file's
upload is opened with its first piece and loaded as its chunks arrive; the last byte seals
it. In process, on the real database: the chunks sent with `session_append` (one held back
by the test where it matters), the worker's `upload_run` in a thread of its own."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from apps.core.errors import ConflictError, UnprocessableError
from apps.ingestions.engine.testing import ndjson_bytes, order_row, uid
from apps.ingestions.models import Blob, Customer, Upload, UploadSession
from apps.ingestions.selectors import upload_list
from apps.ingestions.services import (
    ChecksumMismatchError,
    ChunkChecksum,
    parents_unfinished,
    session_append,
    session_create,
    session_expire,
    session_lookup,
    session_terminate,
    upload_create,
    upload_run,
    upload_stop_incomplete,
)
from apps.tenants.services import tenant_create
from tests.ingestions.gated import GatedBody, customers_bytes, in_thread, worker_loading

# tasks sent on commit go to a queue of the test's own, which no worker reads
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("queue", "big_from_one_mib"),
]


@pytest.fixture
def big_from_one_mib(settings):
    """Files over 1 MiB count as big (8 MiB by default), and a worker waits for the bytes
    as long as the test holds them back."""
    settings.WEB_BUFFER_BODY_BYTES = 1 << 20
    settings.INGEST_RECEIVE_PATIENCE_SECONDS = 600


def _session(tenant, data: bytes, **options) -> UploadSession:
    return session_create(tenant=tenant, filename="customers_1.ndjson", size=len(data), **options)


def _append(tenant, session: UploadSession, data: bytes, offset: int, **options):
    return session_append(
        tenant=tenant,
        token=session.token,
        offset=offset,
        stream=io.BytesIO(data),
        content_length=len(data),
        keep_partial=True,
        **options,
    )


def _first_half(tenant, data: bytes, **options) -> tuple[UploadSession, Upload]:
    """A session with the first half of `data` stored, and the upload loading it."""
    session = _session(tenant, data, **options)
    outcome = _append(tenant, session, data[: len(data) // 2], 0)
    assert outcome.upload is None  # not complete
    session.refresh_from_db()
    assert session.receiving_id is not None
    return session, Upload.objects.get(id=session.receiving_id)


def test_a_big_sessions_upload_is_loaded_while_its_chunks_arrive_and_sealed_by_the_last():
    tenant, _ = tenant_create(name="session-overlap")
    data = customers_bytes(20_000)
    session, upload = _first_half(tenant, data)
    assert (upload.state, upload.sha256, upload.size_bytes) == ("queued", "", len(data))
    assert (upload.record_type, upload.filename, upload.blob_id) == (
        "customers",
        "customers_1.ndjson",
        session.blob_id,
    )
    assert session.upload_id is None  # the session shows its upload once complete
    worker, worked = worker_loading(upload.id)
    assert worker.is_alive()  # waits for the second half
    assert Customer.objects.filter(tenant=tenant).count() == 0  # nothing committed

    outcome = _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    worker.join(60)
    assert (outcome.upload.created, outcome.upload.upload.id) == (True, upload.id)
    session.refresh_from_db()
    assert (session.state, session.upload_id, session.receiving_id) == ("complete", upload.id, None)
    done = Upload.objects.get(id=upload.id)
    sha256 = hashlib.sha256(data).hexdigest()
    assert (done.state, done.rows_inserted, done.sha256) == ("completed", 20_000, sha256)
    assert worked["result"].id == upload.id
    assert Blob.objects.get(id=session.blob_id).sha256 == sha256
    assert Customer.objects.filter(tenant=tenant).count() == 20_000


def test_a_chunk_held_back_mid_way_is_followed_piece_by_piece():
    tenant, _ = tenant_create(name="session-gated")
    data = customers_bytes(20_000)
    session = _session(tenant, data)
    body = GatedBody(data, open_until=len(data) // 2)
    sending, sent = in_thread(
        lambda: session_append(
            tenant=tenant,
            token=session.token,
            offset=0,
            stream=body,
            content_length=len(data),
            keep_partial=True,
        )
    )
    body.waiting.wait(10)
    session.refresh_from_db()
    worker, worked = worker_loading(session.receiving_id)
    assert sending.is_alive()
    assert worker.is_alive()
    body.release()
    sending.join(30)
    worker.join(60)
    assert sent["result"].upload.created
    done = Upload.objects.get(id=session.receiving_id)
    assert (done.state, done.rows_inserted) == ("completed", 20_000)


def test_identical_bytes_found_at_the_end_answer_with_the_original_and_load_nothing_twice():
    tenant, _ = tenant_create(name="session-again")
    data = customers_bytes(10_000)
    original = upload_create(tenant=tenant, stream=io.BytesIO(data), filename="customers_1.ndjson")
    upload_run(upload_id=original.upload.id)
    session, early = _first_half(tenant, data)
    worker, worked = worker_loading(early.id)

    outcome = _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    worker.join(60)
    assert (outcome.upload.created, outcome.upload.upload.id) == (False, original.upload.id)
    assert worked["result"] is None  # its load rolled back, the upload removed
    assert list(Upload.objects.filter(tenant=tenant).values_list("id", flat=True)) == [
        original.upload.id
    ]
    assert not Blob.objects.filter(id=session.blob_id).exists()
    session.refresh_from_db()
    assert (session.state, session.upload_id, session.blob_id) == (
        "complete",
        original.upload.id,
        None,
    )
    first = Upload.objects.get(id=original.upload.id)
    assert (first.rows_inserted, first.rows_unchanged) == (10_000, 0)
    assert Customer.objects.filter(tenant=tenant).count() == 10_000


def test_a_checksum_that_does_not_match_at_the_end_fails_the_session_and_loads_nothing():
    tenant, _ = tenant_create(name="session-mismatch")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data, sha256="0" * 64)
    worker, worked = worker_loading(early.id)
    with pytest.raises(UnprocessableError) as raised:
        _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    assert raised.value.code == "checksum_mismatch"
    worker.join(60)
    assert worked["result"] is None
    session.refresh_from_db()
    assert (session.state, session.error_code, session.blob_id) == (
        "failed",
        "checksum_mismatch",
        None,
    )
    assert not Upload.objects.filter(tenant=tenant).exists()
    assert not Customer.objects.filter(tenant=tenant).exists()


def test_a_session_terminated_mid_way_rolls_its_load_back():
    tenant, _ = tenant_create(name="session-terminated")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    worker, worked = worker_loading(early.id)
    session_terminate(tenant=tenant, token=session.token)
    worker.join(60)
    assert worked["result"] is None
    assert not UploadSession.objects.filter(token=session.token).exists()
    assert not Upload.objects.filter(tenant=tenant).exists()
    assert not Blob.objects.filter(id=session.blob_id).exists()
    assert not Customer.objects.filter(tenant=tenant).exists()


def test_a_session_terminated_before_any_worker_took_its_upload_leaves_nothing():
    tenant, _ = tenant_create(name="session-terminated-early")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    session_terminate(tenant=tenant, token=session.token)
    assert not Upload.objects.filter(id=early.id).exists()
    assert not Blob.objects.filter(id=session.blob_id).exists()
    assert upload_run(upload_id=early.id) is None


def test_a_session_that_expires_takes_its_upload_with_it():
    tenant, _ = tenant_create(name="session-expired")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    UploadSession.objects.filter(token=session.token).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert session_expire() == 1
    session.refresh_from_db()
    assert (session.state, session.receiving_id, session.blob_id) == ("expired", None, None)
    assert not Upload.objects.filter(id=early.id).exists()
    assert not Blob.objects.filter(id=early.blob_id).exists()


def test_a_paused_session_is_neither_failed_as_silent_nor_holds_back_the_tenants_orders():
    tenant, _ = tenant_create(name="session-paused")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    Upload.objects.filter(id=early.id).update(updated_at=F("updated_at") - timedelta(hours=1))
    assert upload_stop_incomplete(silent_for=timedelta(seconds=1)) == 0
    assert Upload.objects.get(id=early.id).state == "queued"
    orders = ndjson_bytes([order_row(order_id=uid("o1"), customer_id=uid("c-1"))])
    order_upload = upload_create(
        tenant=tenant, stream=io.BytesIO(orders), filename="orders_1.ndjson"
    )
    assert not parents_unfinished(order_upload.upload)
    # and once complete, it loads as any upload
    _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    assert upload_run(upload_id=early.id).state == "completed"


def test_a_worker_that_waits_too_long_for_a_sessions_bytes_puts_it_back_instead_of_failing_it(
    settings,
):
    settings.INGEST_RECEIVE_STALL_SECONDS = 1  # patience (600) is longer: the stall check
    tenant, _ = tenant_create(name="session-stall")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    assert upload_run(upload_id=early.id).state == "queued"  # put back, not failed
    assert Blob.objects.filter(id=session.blob_id).exists()
    assert not Customer.objects.filter(tenant=tenant).exists()
    outcome = _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    assert outcome.upload.created
    done = upload_run(upload_id=early.id)
    assert (done.state, done.rows_inserted) == ("completed", 10_000)


def test_a_small_session_registers_its_upload_at_the_end_as_before(settings):
    settings.WEB_BUFFER_BODY_BYTES = 8 << 20
    tenant, _ = tenant_create(name="session-small")
    data = customers_bytes(2_000)
    session = _session(tenant, data)
    _append(tenant, session, data[:100_000], 0)
    session.refresh_from_db()
    assert session.receiving_id is None
    assert not Upload.objects.filter(tenant=tenant).exists()
    outcome = _append(tenant, session, data[100_000:], 100_000)
    assert outcome.upload.upload.sha256 == hashlib.sha256(data).hexdigest()


def test_a_first_chunk_shorter_than_the_head_opens_no_upload_early():
    tenant, _ = tenant_create(name="session-short-first")
    data = customers_bytes(10_000)
    session = _session(tenant, data)
    _append(tenant, session, data[:1000], 0)
    session.refresh_from_db()
    assert session.receiving_id is None
    outcome = _append(tenant, session, data[1000:], 1000)
    assert upload_run(upload_id=outcome.upload.upload.id).rows_inserted == 10_000


def test_a_first_chunk_refused_by_its_checksum_leaves_no_upload():
    tenant, _ = tenant_create(name="session-checksum")
    data = customers_bytes(10_000)
    session = _session(tenant, data)
    wrong = ChunkChecksum(algorithm="sha256", digest=b"\0" * 32)
    with pytest.raises(ChecksumMismatchError):
        _append(tenant, session, data[: len(data) // 2], 0, checksum=wrong)
    session.refresh_from_db()
    assert (session.offset, session.receiving_id) == (0, None)
    assert not Upload.objects.filter(tenant=tenant).exists()
    right = ChunkChecksum(algorithm="sha256", digest=hashlib.sha256(data).digest())
    outcome = _append(tenant, session, data, 0, checksum=right)
    session.refresh_from_db()
    assert (session.state, outcome.upload.created) == ("complete", True)
    assert upload_run(upload_id=session.upload_id).rows_inserted == 10_000


def test_a_terminate_that_read_the_session_before_its_last_chunk_leaves_the_upload_whole(
    monkeypatch,
):
    """DELETE looked the session up, then the last chunk took the lock first and completed
    it: the terminate reads it again under the lock, and the sealed bytes stay."""
    from apps.ingestions.services import sessions

    tenant, _ = tenant_create(name="session-stale-terminate")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    stale = UploadSession.objects.get(token=session.token)
    assert _append(tenant, session, data[len(data) // 2 :], len(data) // 2).upload.created
    monkeypatch.setattr(sessions, "session_lookup", lambda **_: stale)
    session_terminate(tenant=tenant, token=session.token)
    assert Blob.objects.filter(id=early.blob_id).exists()
    done = upload_run(upload_id=early.id)
    assert (done.state, done.rows_inserted) == ("completed", 10_000)


def test_an_expiry_that_read_the_session_before_its_last_chunk_leaves_it_complete():
    from apps.ingestions.services.sessions import _session_mark_expired

    tenant, _ = tenant_create(name="session-stale-expiry")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    stale = UploadSession.objects.get(token=session.token)  # open, as a HEAD read it
    _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    _session_mark_expired(stale)
    session.refresh_from_db()
    assert (session.state, session.blob_id) == ("complete", early.blob_id)
    assert Blob.objects.filter(id=early.blob_id).exists()


def test_a_lookup_past_expiry_while_a_chunk_arrives_leaves_the_session_to_its_sender():
    """A tus HEAD on an overdue session while its last chunk is being received: nothing is
    expired under the sender (it holds the session's lock), and the chunk completes it."""
    tenant, _ = tenant_create(name="session-head-during-chunk")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    rest = data[len(data) // 2 :]
    body = GatedBody(rest, open_until=len(rest) // 2)
    sending, sent = in_thread(
        lambda: session_append(
            tenant=tenant,
            token=session.token,
            offset=len(data) // 2,
            stream=body,
            content_length=len(rest),
            keep_partial=True,
        )
    )
    body.waiting.wait(10)
    UploadSession.objects.filter(token=session.token).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert session_lookup(tenant=tenant, token=session.token).state == "open"
    assert Upload.objects.filter(id=early.id).exists()
    body.release()
    sending.join(30)
    assert sent["result"].upload.upload.id == early.id
    assert upload_run(upload_id=early.id).rows_inserted == 10_000


def test_a_stall_reported_after_the_seal_puts_the_upload_back_instead_of_failing_it():
    """The reader gave up on the next piece just as the last byte came and sealed it."""
    from apps.ingestions.services.processing import _upload_unreadable
    from apps.ingestions.services.storage import incomplete_upload

    tenant, _ = tenant_create(name="session-stall-sealed")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    _upload_unreadable(upload_id=early.id, error=incomplete_upload(1))
    assert Upload.objects.get(id=early.id).state == "queued"
    assert Blob.objects.filter(id=early.blob_id).exists()
    assert upload_run(upload_id=early.id).rows_inserted == 10_000


def test_a_sessions_upload_counts_as_received_at_its_last_byte_for_the_schedule():
    """Opened ten minutes before its last byte, an orders session's upload waits for a
    customers upload received meanwhile, as one registered at the last byte would."""
    tenant, _ = tenant_create(name="session-schedule")
    orders = ndjson_bytes(
        [order_row(order_id=uid(f"o-{n}"), customer_id=uid(f"c-{n}")) for n in range(15_000)]
    )
    session = session_create(tenant=tenant, filename="orders_1.ndjson", size=len(orders))
    _append(tenant, session, orders[: len(orders) // 2], 0)
    session.refresh_from_db()
    early_id = session.receiving_id
    Upload.objects.filter(id=early_id).update(created_at=F("created_at") - timedelta(minutes=10))
    upload_create(
        tenant=tenant, stream=io.BytesIO(customers_bytes(10)), filename="customers_1.ndjson"
    )
    _append(tenant, session, orders[len(orders) // 2 :], len(orders) // 2)
    assert parents_unfinished(Upload.objects.get(id=early_id))


def test_an_upload_a_worker_failed_before_the_last_byte_is_registered_afresh_at_it():
    tenant, _ = tenant_create(name="session-early-failed")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    Upload.objects.filter(id=early.id).update(state="failed", error_code="internal_error")
    outcome = _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    assert outcome.upload.created
    assert outcome.upload.upload.id != early.id
    assert not Upload.objects.filter(id=early.id).exists()
    assert upload_run(upload_id=outcome.upload.upload.id).rows_inserted == 10_000


def test_the_upload_list_shows_a_sessions_upload_once_the_session_is_complete():
    tenant, _ = tenant_create(name="session-listed")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    assert not upload_list(tenant=tenant).exists()
    _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    assert [u.id for u in upload_list(tenant=tenant)] == [early.id]


def _unreadable_gzip(size: int) -> bytes:
    """A gzip header, then bytes that are no deflate stream: unreadable from the start."""
    import random

    noise = random.Random(7).randbytes(size - 10)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + noise


def test_a_session_whose_first_bytes_cannot_be_decompressed_fails_before_the_rest_is_sent():
    """The worker fails the early upload on its bytes (invalid_compression): the next chunk
    is refused, the session fails with that error and shows that upload, its bytes go."""
    tenant, _ = tenant_create(name="session-unreadable")
    data = _unreadable_gzip(3 << 20)
    session = session_create(tenant=tenant, filename="customers_1.ndjson.gz", size=len(data))
    half = len(data) // 2
    assert _append(tenant, session, data[:half], 0).upload is None
    session.refresh_from_db()
    early, blob_id = session.receiving_id, session.blob_id
    upload_run(upload_id=early)  # fails at once: its bytes are no deflate stream
    failed = Upload.objects.get(id=early)
    assert (failed.state, failed.error_code) == ("failed", "invalid_compression")

    with pytest.raises(UnprocessableError) as refused:
        _append(tenant, session, data[half:], half)
    assert refused.value.code == "invalid_compression"
    assert refused.value.detail.startswith("The session failed: the file cannot be read: ")
    session.refresh_from_db()
    assert (session.state, session.error_code, session.upload_id) == (
        "failed",
        "invalid_compression",
        early,
    )
    assert (session.offset, session.blob_id, session.receiving_id) == (half, None, None)
    assert not Blob.objects.filter(id=blob_id).exists()
    assert Upload.objects.get(id=early).state == "failed"  # as its event told
    with pytest.raises(ConflictError) as again:
        _append(tenant, session, data[half:], half)
    assert again.value.code == "session_failed"


def test_an_early_upload_failed_for_another_reason_lets_the_session_go_on():
    """Only a fault of the bytes received fails the session early: after an internal error
    the rest is taken, and the file registered afresh at its last byte."""
    tenant, _ = tenant_create(name="session-early-internal")
    data = customers_bytes(10_000)
    session, early = _first_half(tenant, data)
    Upload.objects.filter(id=early.id).update(
        state="failed", error_code="decompression_bomb", error_detail="ratio"
    )
    outcome = _append(tenant, session, data[len(data) // 2 :], len(data) // 2)
    assert outcome.upload.created
    assert outcome.upload.upload.id != early.id
