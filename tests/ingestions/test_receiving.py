"""Process while receiving, in process: the web's side (`upload_receive`) fed by a stream the
test controls, the worker's side (`upload_run`) in a thread of its own, on the real
database. The same through gunicorn and a Celery worker: test_receiving_stack.py."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from apps.core.errors import ConflictError, PayloadTooLargeError
from apps.ingestions import engine
from apps.ingestions.models import Blob, BlobChunk, Customer, Upload
from apps.ingestions.services import (
    BlobReader,
    upload_create,
    upload_give_way,
    upload_receive,
    upload_requeue,
    upload_run,
    upload_stop_incomplete,
)
from apps.ingestions.services.storage import (
    CHUNK_BYTES,
    BlobGone,
    ReceiveBehind,
    blob_write_piece,
)
from apps.tenants.services import tenant_create
from tests.conftest import wait_for
from tests.core.test_metrics import labels, scrape
from tests.factories import database_url_of_tests
from tests.ingestions.gated import GatedBody, customers_bytes, in_thread, worker_loading

# tasks sent on commit go to a queue of the test's own, which no worker reads
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("queue", "patient_workers"),
]


@pytest.fixture
def patient_workers(settings):
    """The tests hold a body back as long as they need: a worker waits for it."""
    settings.INGEST_RECEIVE_PATIENCE_SECONDS = 600


def _receive(tenant, body, *, size: int, filename="customers_1.ndjson", **options):
    return lambda: upload_receive(
        tenant=tenant, stream=body, filename=filename, size=size, **options
    )


@dataclass
class Receiving:
    """A body being received in a thread (`upload_receive`), held back at `open_until`."""

    body: GatedBody
    upload: Upload
    thread: threading.Thread
    out: dict


def _receiving(tenant, data: bytes, *, open_until: int) -> Receiving:
    """Start receiving `data`; returns once its upload exists and the body is held."""
    body = GatedBody(data, open_until=open_until)
    thread, out = in_thread(_receive(tenant, body, size=len(data)))
    body.waiting.wait(10)
    return Receiving(body, Upload.objects.get(tenant=tenant, sha256=""), thread, out)


def test_a_following_reader_gets_each_piece_as_it_commits_and_ends_at_the_seal():
    blob = Blob.objects.create(sha256="", size_bytes=0)
    pieces = [bytes([n]) * 1000 for n in range(3)]
    with BlobReader(blob.id, follow=True) as reader:
        blob_write_piece(blob.id, 0, pieces[0])
        assert reader.read(1000) == pieces[0]  # the first piece, before the others exist
        got = {}
        thread, _ = in_thread(lambda: got.setdefault("rest", reader.read()))
        blob_write_piece(blob.id, 1, pieces[1])
        wait_for(lambda: reader.tell() == 2000, timeout=10)
        assert thread.is_alive()  # not sealed: it waits for more
        blob_write_piece(blob.id, 2, pieces[2])
        Blob.objects.filter(id=blob.id).update(sha256="ab" * 32, size_bytes=3000)
        thread.join(10)
        assert got["rest"] == pieces[1] + pieces[2]


def test_a_reader_that_does_not_follow_ends_at_the_last_stored_piece():
    blob = Blob.objects.create(sha256="", size_bytes=0)
    blob_write_piece(blob.id, 0, b"abc")
    with BlobReader(blob.id) as reader:
        assert reader.read() == b"abc"


def test_a_following_reader_raises_blob_gone_when_the_blob_is_deleted():
    blob = Blob.objects.create(sha256="", size_bytes=0)
    blob_write_piece(blob.id, 0, b"x" * 10)
    with BlobReader(blob.id, follow=True) as reader:
        assert reader.read(10) == b"x" * 10
        thread, out = in_thread(reader.read)
        time.sleep(0.3)
        assert thread.is_alive()  # waiting for the next piece
        blob.delete()
        thread.join(10)
    assert isinstance(out["error"], BlobGone)


def test_a_following_reader_gives_up_when_no_piece_comes_for_the_stall_limit(settings):
    settings.INGEST_RECEIVE_STALL_SECONDS = 1
    blob = Blob.objects.create(sha256="", size_bytes=0)
    blob_write_piece(blob.id, 0, b"y" * 7)
    with BlobReader(blob.id, follow=True) as reader, pytest.raises(engine.FileError) as caught:
        reader.read()
    assert caught.value.code == "incomplete_upload"
    assert "stopped arriving after 7 bytes, for 1 s" in caught.value.detail


@pytest.mark.parametrize(
    ("work_seconds", "gives_up"),
    [(0.0, True), (2.0, False)],
    ids=["reader-mostly-waiting", "reader-mostly-working"],
)
def test_a_following_reader_gives_up_past_its_patience_only_when_it_waits_more_than_it_works(
    settings, work_seconds, gives_up
):
    """Past INGEST_RECEIVE_PATIENCE_SECONDS of waits a reader gives up (`ReceiveBehind`)
    when it has waited longer than it worked; one whose bytes come nearly as fast as it
    uses them goes on: giving up would throw its work away."""
    settings.INGEST_RECEIVE_PATIENCE_SECONDS = 0.2
    blob = Blob.objects.create(sha256="", size_bytes=0)
    blob_write_piece(blob.id, 0, b"a" * 10)
    with BlobReader(blob.id, follow=True) as reader:
        assert reader.read(10) == b"a" * 10
        time.sleep(work_seconds)  # what its load does with the first piece
        thread, out = in_thread(reader.read)
        time.sleep(0.6)  # the next piece comes late: waits past the patience
        blob_write_piece(blob.id, 1, b"b" * 10)
        Blob.objects.filter(id=blob.id).update(sha256="ab" * 32, size_bytes=20)
        thread.join(10)
    if gives_up:
        assert isinstance(out["error"], ReceiveBehind)
    else:
        assert (out.get("error"), out["result"]) == (None, b"b" * 10)


def test_a_received_upload_is_queued_before_its_end_and_sealed_at_it():
    tenant, _ = tenant_create(name="receive")
    data = customers_bytes(30_000)
    receiving = _receiving(tenant, data, open_until=2 * CHUNK_BYTES)
    upload = receiving.upload
    assert (upload.state, upload.sha256, upload.size_bytes) == ("queued", "", len(data))
    assert BlobChunk.objects.filter(blob_id=upload.blob_id).count() == 2
    receiving.body.release()
    receiving.thread.join(30)
    outcome = receiving.out["result"]
    sha256 = hashlib.sha256(data).hexdigest()
    assert (outcome.created, outcome.upload.id, outcome.upload.sha256) == (True, upload.id, sha256)
    blob = Blob.objects.get(id=upload.blob_id)
    assert (blob.sha256, blob.size_bytes) == (sha256, len(data))
    with BlobReader(blob.id) as reader:
        assert reader.read() == data


def test_a_worker_loads_the_upload_while_its_bytes_arrive_and_finishes_after_the_last():
    tenant, _ = tenant_create(name="overlap")
    data = customers_bytes(40_000)
    receiving = _receiving(tenant, data, open_until=len(data) // 2)
    upload = receiving.upload
    # rows of the first half are parsed and staged while the second half is not sent
    worker, _ = worker_loading(upload.id)
    assert Upload.objects.get(id=upload.id).state == "processing"
    assert worker.is_alive()
    assert receiving.thread.is_alive()
    assert Customer.objects.filter(tenant=tenant).count() == 0  # nothing committed yet
    receiving.body.release()
    receiving.thread.join(30)
    worker.join(60)
    assert receiving.out["result"].created
    done = Upload.objects.get(id=upload.id)
    assert (done.state, done.rows_inserted, done.bytes_done) == ("completed", 40_000, len(data))
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert Customer.objects.filter(tenant=tenant).count() == 40_000


def test_bytes_received_before_answer_with_the_original_and_load_nothing_twice():
    tenant, _ = tenant_create(name="again")
    data = customers_bytes(20_000)
    original = upload_create(tenant=tenant, stream=io.BytesIO(data), filename="customers_1.ndjson")
    upload_run(upload_id=original.upload.id)
    receiving = _receiving(tenant, data, open_until=len(data) - 10)
    again = receiving.upload
    worker, worked = worker_loading(again.id)
    receiving.body.release()  # the last bytes: the same file as the original's
    receiving.thread.join(30)
    worker.join(60)
    outcome = receiving.out["result"]
    assert (outcome.created, outcome.upload.id) == (False, original.upload.id)
    assert worked["result"] is None  # its load rolled back, the upload removed
    assert list(Upload.objects.filter(tenant=tenant).values_list("id", flat=True)) == [
        original.upload.id
    ]
    assert not Blob.objects.filter(id=again.blob_id).exists()
    first = Upload.objects.get(id=original.upload.id)
    assert (first.rows_inserted, first.rows_unchanged) == (20_000, 0)
    assert Customer.objects.filter(tenant=tenant).count() == 20_000


def test_a_client_gone_mid_body_leaves_nothing_loaded_nor_stored():
    tenant, _ = tenant_create(name="gone")
    data = customers_bytes(30_000)
    receiving = _receiving(tenant, data, open_until=len(data) // 2)
    upload = receiving.upload
    worker, worked = worker_loading(upload.id)
    receiving.body.fail(OSError("the client closed the connection"))
    receiving.thread.join(30)
    worker.join(60)
    assert isinstance(receiving.out["error"], OSError)
    assert worked["result"] is None
    assert not Upload.objects.filter(tenant=tenant).exists()
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    assert Customer.objects.filter(tenant=tenant).count() == 0


def test_a_client_gone_before_any_worker_ran_it_leaves_nothing():
    tenant, _ = tenant_create(name="early")
    data = customers_bytes(20_000)
    receiving = _receiving(tenant, data, open_until=CHUNK_BYTES + 5)
    upload = receiving.upload
    receiving.body.fail(OSError("reset"))
    receiving.thread.join(30)
    assert isinstance(receiving.out["error"], OSError)
    assert not Upload.objects.filter(tenant=tenant).exists()
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    assert upload_run(upload_id=upload.id) is None  # its task, arriving late, finds nothing


def test_an_upload_waiting_for_one_whose_client_went_away_is_queued_at_once():
    """Orders wait for the tenant's customers still arriving; the customers' client goes
    away: the orders are queued then, not at the housekeeping's next sweep."""
    from apps.ingestions.engine.testing import ndjson_bytes, order_row

    tenant, _ = tenant_create(name="waits")
    data = customers_bytes(20_000)
    receiving = _receiving(tenant, data, open_until=CHUNK_BYTES + 5)
    orders = upload_create(
        tenant=tenant, stream=io.BytesIO(ndjson_bytes([order_row()])), filename="orders_1.ndjson"
    )
    upload_run(upload_id=orders.upload.id)
    assert Upload.objects.get(id=orders.upload.id).state == "waiting"
    receiving.body.fail(OSError("reset"))
    receiving.thread.join(30)
    assert not Upload.objects.filter(id=receiving.upload.id).exists()
    assert Upload.objects.get(id=orders.upload.id).state == "queued"


def test_a_body_longer_than_the_limit_is_refused_mid_way_and_nothing_is_kept(settings):
    tenant, _ = tenant_create(name="limit")
    data = customers_bytes(20_000)
    settings.INGEST_MAX_UPLOAD_BYTES = len(data) - 1
    with pytest.raises(PayloadTooLargeError):
        # a Content-Length that lied: the body goes on past it
        upload_receive(tenant=tenant, stream=io.BytesIO(data), filename="c.ndjson", size=1000)
    assert not Upload.objects.filter(tenant=tenant).exists()
    assert not Blob.objects.exists()


def test_an_upload_whose_sender_died_fails_as_incomplete_and_its_bytes_go(settings):
    """The web process was killed mid-body: no more pieces, no seal, no cancel. The worker
    following it gives up after INGEST_RECEIVE_STALL_SECONDS."""
    settings.INGEST_RECEIVE_STALL_SECONDS = 1
    tenant, _ = tenant_create(name="dead-web")
    data = customers_bytes(30_000)
    receiving = _receiving(tenant, data, open_until=len(data) // 2)
    body, upload = receiving.body, receiving.upload
    done = upload_run(upload_id=upload.id)  # the sender is stuck: as good as dead
    assert (done.state, done.error_code) == ("failed", "incomplete_upload")
    assert done.blob_id is None
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    assert Customer.objects.filter(tenant=tenant).count() == 0
    body.fail(OSError("gone"))
    receiving.thread.join(30)
    assert Upload.objects.get(id=upload.id).state == "failed"  # kept: its event was sent


def test_connection_is_left_in_autocommit_after_receiving():
    tenant, _ = tenant_create(name="autocommit")
    data = customers_bytes(1000)
    upload_receive(tenant=tenant, stream=io.BytesIO(data), filename="c.ndjson", size=len(data))
    assert connection.get_autocommit()
    assert not connection.in_atomic_block


def _sent_by(module, monkeypatch) -> list:
    """The uploads `module` sends to a worker from now on (sent for real, to the test's
    queue), in order."""
    sent, send = [], module.upload_enqueue

    def enqueue(*, upload_id) -> bool:
        sent.append(upload_id)
        return send(upload_id=upload_id)

    monkeypatch.setattr(module, "upload_enqueue", enqueue)
    return sent


def test_a_worker_puts_back_an_upload_whose_bytes_come_slower_than_it_loads(
    settings, monkeypatch, client
):
    """Past INGEST_RECEIVE_PATIENCE_SECONDS of waits the load rolls back and the upload is
    queued again, but sent to a worker only by its seal (the re-queue job passes over it).
    Meanwhile it waits for its client, not for a worker: the queue's depth leaves it out."""
    from apps.ingestions.services import receiving as receiving_service

    sent = _sent_by(receiving_service, monkeypatch)
    settings.INGEST_RECEIVE_PATIENCE_SECONDS = 0.3
    tenant, _ = tenant_create(name="slow")
    data = customers_bytes(30_000)
    receiving = _receiving(tenant, data, open_until=len(data) // 2)
    body, upload = receiving.body, receiving.upload
    sent.clear()  # its first message, at its first bytes
    parked = upload_run(upload_id=upload.id)
    assert (parked.state, parked.started_at, parked.rows_done) == ("queued", None, 0)
    assert Customer.objects.filter(tenant=tenant).count() == 0
    metrics = scrape(client)
    assert metrics[("ingest_uploads", labels(state="queued", type="customers"))] == 1
    assert metrics[("ingest_queue_depth", labels(state="queued"))] == 0
    Upload.objects.filter(id=upload.id).update(updated_at=timezone.now() - timedelta(hours=1))
    assert upload_requeue() == 0  # not sent again while its bytes arrive
    body.release()
    receiving.thread.join(30)
    assert sent == [upload.id]  # sent by its seal
    assert scrape(client)[("ingest_queue_depth", labels(state="queued"))] == 1
    done = upload_run(upload_id=upload.id)
    assert (done.state, done.rows_inserted) == ("completed", 30_000)


def test_an_upload_sealed_as_its_worker_gives_up_on_its_bytes_is_sent_again(monkeypatch):
    """The seal can come after the worker gave up waiting (`ReceiveBehind`) and before it
    put the upload back: the seal found the upload still the worker's and sent it to none,
    so putting it back sends it, and it is not left waiting for bytes that are all in."""
    from apps.ingestions.services import scheduling

    sent = _sent_by(scheduling, monkeypatch)
    tenant, _ = tenant_create(name="sealed-meanwhile")
    data = customers_bytes(5_000)
    upload = upload_create(tenant=tenant, stream=io.BytesIO(data), filename="customers_1.ndjson")
    upload = upload.upload
    assert upload.sha256 == hashlib.sha256(data).hexdigest()  # sealed
    Upload.objects.filter(id=upload.id).update(state="processing")  # its worker's, giving up
    upload_give_way(upload_id=upload.id, until_received=True)
    put_back = Upload.objects.get(id=upload.id)
    assert (put_back.state, put_back.waits_for_bytes, put_back.started_at) == (
        "queued",
        False,
        None,
    )
    assert sent == [upload.id]
    done = upload_run(upload_id=upload.id)
    assert (done.state, done.rows_inserted) == ("completed", 5_000)


def test_the_housekeeping_fails_an_upload_whose_sender_went_silent_and_no_worker_holds():
    tenant, _ = tenant_create(name="silent")
    data = customers_bytes(20_000)
    receiving = _receiving(tenant, data, open_until=CHUNK_BYTES + 10)
    body, upload = receiving.body, receiving.upload
    assert upload_stop_incomplete(silent_for=timedelta(seconds=30)) == 0  # heard of recently
    Upload.objects.filter(id=upload.id).update(updated_at=timezone.now() - timedelta(minutes=5))
    assert upload_stop_incomplete(silent_for=timedelta(seconds=30)) == 1
    failed = Upload.objects.get(id=upload.id)
    assert (failed.state, failed.error_code) == ("failed", "incomplete_upload")
    assert failed.blob_id is None
    assert failed.error_detail == (
        "The file's bytes stopped arriving, for 30 s (the connection that sent them was "
        "lost); nothing of this file was loaded."
    )
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    body.release()  # the sender was only slow: its last byte finds the upload stopped
    receiving.thread.join(30)
    assert isinstance(receiving.out["error"], ConflictError)
    assert receiving.out["error"].code == "upload_stopped"
    stopped = Upload.objects.get(id=upload.id)
    assert (stopped.state, stopped.sha256) == ("failed", "")


def test_an_upload_whose_cancel_lost_the_lock_race_is_removed_by_the_housekeeping():
    """The client went away while something else held the upload's lock for a moment (a
    re-queue job, a worker putting it back): only its bytes went; the housekeeping removes
    the upload, with no failure to report for it."""
    tenant, _ = tenant_create(name="ghost")
    data = customers_bytes(20_000)
    receiving = _receiving(tenant, data, open_until=CHUNK_BYTES + 10)
    upload = receiving.upload
    lock = "SELECT pg_advisory_xact_lock(hashtextextended('upload:' || %s::text, 0))"
    with psycopg.connect(database_url_of_tests()) as holder:
        holder.execute(lock, (str(upload.id),))
        receiving.body.fail(OSError("reset"))
        receiving.thread.join(30)
    assert not Blob.objects.filter(id=upload.blob_id).exists()
    assert Upload.objects.filter(id=upload.id).exists()
    Upload.objects.filter(id=upload.id).update(updated_at=timezone.now() - timedelta(minutes=5))
    assert upload_stop_incomplete(silent_for=timedelta(seconds=30)) == 0
    assert not Upload.objects.filter(id=upload.id).exists()


def test_a_sender_that_keeps_sending_touches_its_upload(settings, monkeypatch):
    monkeypatch.setattr("apps.ingestions.services.receiving.FLUSH_SECONDS", 0.2)
    tenant, _ = tenant_create(name="alive")
    data = customers_bytes(20_000)
    # past the head (256 KiB), into the pieces
    receiving = _receiving(tenant, data, open_until=1000 + 256 * 1024)
    body, upload = receiving.body, receiving.upload
    before = upload.updated_at
    for _ in range(3):  # 64 KiB every 0.3 s, as a slow link sends
        time.sleep(0.3)
        body.open_more(64 * 1024)
    wait_for(lambda: Upload.objects.get(id=upload.id).updated_at > before, timeout=10)
    assert BlobChunk.objects.filter(blob_id=upload.blob_id).count() >= 1  # flushed < 1 MiB
    body.release()
    receiving.thread.join(30)


def test_two_clients_sending_the_same_bytes_at_once_get_one_upload():
    """The second body ends first: its upload is sealed, the first one's seal finds the
    same bytes and answers with it, and the first upload is gone: one upload to load."""
    tenant, _ = tenant_create(name="both")
    data = customers_bytes(20_000)
    first = _receiving(tenant, data, open_until=len(data) // 2)
    second = upload_receive(
        tenant=tenant, stream=io.BytesIO(data), filename="customers_2.ndjson", size=len(data)
    )
    assert second.created
    first.body.release()
    first.thread.join(30)
    outcome = first.out["result"]
    assert (outcome.created, outcome.upload.id) == (False, second.upload.id)
    assert list(Upload.objects.filter(tenant=tenant).values_list("id", flat=True)) == [
        second.upload.id
    ]
    assert not Blob.objects.filter(id=first.upload.blob_id).exists()
    done = upload_run(upload_id=second.upload.id)
    assert (done.state, done.rows_inserted) == ("completed", 20_000)
    assert Customer.objects.filter(tenant=tenant).count() == 20_000
