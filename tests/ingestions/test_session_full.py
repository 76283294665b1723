"""A session that has every byte but no upload is completed: a tus chunk that broke off,
or went past the size, after its last byte was stored; a web process that died between
storing the last byte and completing the session (the re-queue job completes it). A tus
client reads offset == length as done and sends nothing more: the file was never loaded,
and its bytes were deleted with the session a day later."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from apps.core.errors import ApplicationError
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload, UploadSession
from apps.ingestions.services import session_append, session_create, sessions_complete_full
from apps.ingestions.services import session_chunks as chunks_module
from apps.tenants.services import tenant_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("queue")]

DATA = ndjson_bytes([customer_row(customer_id=uid(f"c{n}")) for n in range(50)])


class BreaksOff(io.RawIOBase):
    """`data`, then the connection lost (OSError), as a chunked body cut before its end."""

    def __init__(self, data: bytes):
        self.left = data

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.left:
            raise OSError("the client went away")
        piece, self.left = self.left[:size], self.left[size:]
        return piece


@pytest.fixture
def tenant():
    return tenant_create(name="full")[0]


def _session(tenant) -> UploadSession:
    return session_create(tenant=tenant, filename="customers_1.ndjson", size=len(DATA))


@pytest.mark.parametrize(
    ("stream", "code"),
    [(BreaksOff(DATA), "chunk_incomplete"), (io.BytesIO(DATA + b"extra"), "past_declared_size")],
    ids=["broken off after its last byte", "past the size"],
)
def test_a_tus_chunk_that_fails_after_its_last_byte_still_completes_the_session(
    tenant, stream, code, monkeypatch
):
    """The chunk's answer is its error, but every byte is stored (in pieces of the file's
    size here, 1 MiB by default): the session completes and its upload is registered
    (queued), as the chunk's success would have done."""
    monkeypatch.setattr(chunks_module, "CHUNK_BYTES", len(DATA))
    session = _session(tenant)
    with pytest.raises(ApplicationError) as raised:
        session_append(
            tenant=tenant, token=session.token, offset=0, stream=stream, content_length=None,
            keep_partial=True,
        )  # fmt: skip
    assert raised.value.code == code
    session.refresh_from_db()
    assert (session.state, session.offset) == ("complete", len(DATA))
    upload = Upload.objects.get(id=session.upload_id)
    assert (upload.state, upload.size_bytes, upload.record_type) == (
        "queued",
        len(DATA),
        "customers",
    )


def test_a_chunk_broken_off_before_the_last_byte_leaves_the_session_open(tenant):
    """Bytes still missing: the session stays open at what was stored, no upload."""
    session = _session(tenant)
    with pytest.raises(ApplicationError):
        session_append(
            tenant=tenant, token=session.token, offset=0, stream=BreaksOff(DATA[:-10]),
            content_length=None, keep_partial=True,
        )  # fmt: skip
    session.refresh_from_db()
    assert (session.state, session.offset, session.upload_id) == ("open", len(DATA) - 10, None)
    assert sessions_complete_full(older_than=timedelta(0)) == 0


def test_the_requeue_job_completes_a_full_session_its_web_process_left_open(tenant, monkeypatch):
    """The process died after the last byte's commit, before the completion (here: the
    completion raising as the death would stop it). The re-queue job registers the upload,
    once; a session still young is left to its request."""
    session = _session(tenant)
    real = chunks_module._session_complete

    def dies(_session):
        raise SystemExit("the web process is gone")

    monkeypatch.setattr(chunks_module, "_session_complete", dies)
    with pytest.raises(SystemExit):
        session_append(
            tenant=tenant, token=session.token, offset=0, stream=io.BytesIO(DATA),
            content_length=len(DATA),
        )  # fmt: skip
    monkeypatch.setattr(chunks_module, "_session_complete", real)
    session.refresh_from_db()
    assert (session.state, session.offset, session.upload_id) == ("open", len(DATA), None)
    assert sessions_complete_full() == 0  # younger than UPLOAD_STUCK_SECONDS
    assert sessions_complete_full(older_than=timedelta(0)) == 1
    assert sessions_complete_full(older_than=timedelta(0)) == 0
    session.refresh_from_db()
    assert session.state == "complete"
    assert Upload.objects.get(id=session.upload_id).state == "queued"
