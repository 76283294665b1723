"""The staging table (SPEC 4): written over a connection of its own, dropped with the
upload's transaction, and cleaned up after loads that did not finish, never under a load
that is still running."""

from __future__ import annotations

import io
import uuid

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.ingestions.engine import RECORDS, load_upload
from apps.ingestions.engine.stage import (
    STAGING_PREFIX,
    Staging,
    StagingUnavailable,
    connection_params,
    staging_drop_stale,
)
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, UploadState
from apps.ingestions.services import fingerprint, upload_process, upload_register


def _connect() -> psycopg.Connection:
    """A connection of the test's own to the test database, outside its transaction."""
    return psycopg.connect(**connection_params(connection.connection), autocommit=True)


def _tables(conn) -> set[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE %s", (STAGING_PREFIX + "%",)
    ).fetchall()
    return {name for (name,) in rows}


def _janitor() -> list[str]:
    with _connect() as conn, conn.transaction(), conn.cursor() as cursor:
        return staging_drop_stale(cursor)


@pytest.fixture(autouse=True)
def _two_rows_a_chunk(monkeypatch):
    """Files of several chunks (two rows each), which stage over the second connection."""
    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", 2)
    monkeypatch.setattr("apps.ingestions.engine.parse.FIRST_CHUNK_ROWS", 2)


def _customers(count: int) -> bytes:
    return ndjson_bytes([customer_row(customer_id=uid(f"c{i}")) for i in range(count)])


def _register(tenant, data: bytes):
    return upload_register(
        tenant=tenant,
        record_type="customers",
        filename="customers_1.ndjson",
        fingerprint=fingerprint(io.BytesIO(data)),
        strict=False,
    ).upload


def _load(cursor, upload, data: bytes, **options):
    return load_upload(
        cursor,
        tenant_id=str(upload.tenant_id),
        upload_id=str(upload.id),
        record_type="customers",
        stream=io.BytesIO(data),
        now=timezone.now(),
        **options,
    )


@pytest.mark.parametrize("strict", [False, True], ids=["pipelined", "strict"])
def test_a_load_drops_its_staging_table_in_the_uploads_transaction(tenant, strict):
    """The table exists while the load runs and is gone, in the caller's transaction, once
    the load returns; the rows went through it into the final table."""
    data = _customers(5)
    upload = _register(tenant, data)
    name = f"{STAGING_PREFIX}{upload.id.hex}"
    with transaction.atomic(), connection.connection.cursor() as cursor:
        result = _load(cursor, upload, data, strict=strict)
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname = %s", (name,))
        assert cursor.fetchone()[0] == 0
    assert result.rows.inserted == 5
    assert Customer.objects.filter(tenant=tenant).count() == 5


def test_the_janitor_keeps_a_table_still_being_written_and_drops_it_once_left(db):
    """While a load's staging connection lives (its advisory lock held) the table is kept;
    once that connection is gone and no transaction uses the table, it is dropped."""
    upload_id = str(uuid.uuid4())
    with connection.cursor() as cursor:
        staging = Staging(cursor.cursor, RECORDS["customers"], upload_id)
    name = f"{STAGING_PREFIX}{uuid.UUID(upload_id).hex}"
    with _connect() as conn:
        try:
            assert name in _tables(conn)
            assert name not in _janitor()
            assert name in _tables(conn)
        finally:
            staging.close()
        assert name in _janitor()
        assert name not in _tables(conn)


def test_the_janitor_keeps_a_table_a_merging_transaction_still_reads(db):
    """A table whose staging connection has closed but which an open transaction has read
    (a merge not yet committed) is not waited for and not dropped."""
    upload_id = str(uuid.uuid4())
    with connection.cursor() as cursor:
        staging = Staging(cursor.cursor, RECORDS["customers"], upload_id)
    staging.close()
    name = f"{STAGING_PREFIX}{uuid.UUID(upload_id).hex}"
    with _connect() as merging, _connect() as conn:
        with merging.transaction():
            merging.execute(f"SELECT count(*) FROM {name}")
            assert name not in _janitor()
            assert name in _tables(conn)
        assert name in _janitor()
        assert name not in _tables(conn)


def test_a_failed_load_leaves_its_table_to_the_janitor_and_a_rerun_starts_afresh(tenant):
    """A load whose transaction rolls back cannot drop its table; the janitor can. A second
    run of the same upload before that replaces the leftover instead of failing on it."""
    data = _customers(5)
    upload = _register(tenant, data)
    name = f"{STAGING_PREFIX}{upload.id.hex}"

    def run() -> int:
        with transaction.atomic(), connection.connection.cursor() as cursor:
            cursor.execute("SAVEPOINT before_load")
            result = _load(cursor, upload, data)
            cursor.execute("ROLLBACK TO SAVEPOINT before_load")  # as a failed upload does
            return result.rows.inserted

    with _connect() as conn:
        assert run() == 5
        assert name in _tables(conn)
        assert run() == 5
        assert name in _tables(conn)
        assert name in _janitor()
        assert name not in _tables(conn)
    assert Customer.objects.filter(tenant=tenant).count() == 0


def test_an_upload_whose_staging_connection_is_refused_is_left_to_run_again(tenant, monkeypatch):
    """The server refusing the staging connection (too many clients) is not a verdict on
    the file: the error propagates for the task to retry, nothing is loaded or failed, and
    the next run loads the file."""
    data = _customers(4)
    upload = _register(tenant, data)

    real_connect = psycopg.connect

    def refuse(*args, **kwargs):
        if kwargs.get("application_name") == "ingest-staging":
            raise psycopg.OperationalError("sorry, too many clients already")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr("apps.ingestions.engine.stage.psycopg.connect", refuse)
    with pytest.raises(StagingUnavailable, match="too many clients"):
        upload_process(upload_id=upload.id, stream=io.BytesIO(data))
    upload.refresh_from_db()
    assert (upload.state, upload.error_code) == (UploadState.RECEIVED, "")
    assert Customer.objects.filter(tenant=tenant).count() == 0
    monkeypatch.undo()
    upload = upload_process(upload_id=upload.id, stream=io.BytesIO(data))
    assert (upload.state, upload.rows_inserted) == (UploadState.COMPLETED, 4)
    assert Customer.objects.filter(tenant=tenant).count() == 4


@pytest.mark.parametrize("level", ["REPEATABLE_READ", "SERIALIZABLE"])
def test_a_load_refuses_a_transaction_that_would_not_see_the_staged_chunks(tenant, level):
    """Under one snapshot for the whole transaction, the chunks the staging connection
    commits would stay invisible and the rows would silently go missing: refused at once."""
    data = _customers(2)
    with _connect() as conn:
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel[level]
        with pytest.raises(ValueError, match="needs a read committed transaction"):
            load_upload(
                conn.cursor(),
                tenant_id=str(tenant.id),
                upload_id=str(uuid.uuid4()),
                record_type="customers",
                stream=io.BytesIO(data),
                now=timezone.now(),
            )
        conn.rollback()


def test_the_every_minute_job_drops_a_leftover_staging_table(db):
    """The periodic re-queue job runs the janitor too."""
    from apps.ingestions.tasks import upload_requeue_task

    upload_id = str(uuid.uuid4())
    with connection.cursor() as cursor:
        Staging(cursor.cursor, RECORDS["orders"], upload_id).close()  # as a killed load leaves it
    name = f"{STAGING_PREFIX}{uuid.UUID(upload_id).hex}"
    upload_requeue_task()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname = %s", (name,))
        assert cursor.fetchone()[0] == 0


def test_a_statement_timeout_fails_the_upload_instead_of_retrying_it(tenant):
    """Only a refused staging connection is left for a retry; the server cancelling a
    statement of the load (here its statement_timeout) fails the upload like any error."""
    data = _customers(3)
    upload = _register(tenant, data)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pg_temp.slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER slow BEFORE INSERT ON customers "
            "FOR EACH ROW EXECUTE FUNCTION pg_temp.slow()"
        )
        cursor.execute("SET statement_timeout = '500ms'")
    try:
        upload = upload_process(upload_id=upload.id, stream=io.BytesIO(data))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "internal_error")
    assert Customer.objects.filter(tenant=tenant).count() == 0


@pytest.mark.parametrize("rows", [0, 1, 2], ids=["empty", "one-row", "a-full-chunk"])
def test_a_file_of_one_chunk_needs_no_second_connection(tenant, monkeypatch, rows):
    """A file that ends within its first chunk is staged on the load's own connection:
    with the staging connection refused it still loads. (A file that ends exactly at the
    end of a full first chunk cannot be told from a longer one: it takes the usual way.)"""
    data = _customers(rows)
    upload = _register(tenant, data)
    real_connect = psycopg.connect
    opened = []

    def watch(*args, **kwargs):
        if kwargs.get("application_name") == "ingest-staging":
            opened.append(kwargs)
            raise psycopg.OperationalError("no staging connection in this test")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr("apps.ingestions.engine.stage.psycopg.connect", watch)
    if rows < 2:
        upload = upload_process(upload_id=upload.id, stream=io.BytesIO(data))
        assert (upload.rows_total, upload.rows_inserted) == (rows, rows)
        assert opened == []
    else:
        with pytest.raises(StagingUnavailable):
            upload_process(upload_id=upload.id, stream=io.BytesIO(data))
        assert len(opened) == 1
    assert Customer.objects.filter(tenant=tenant).count() == (rows if rows < 2 else 0)


def test_a_chunk_ends_at_its_size_limit_whatever_the_width_of_its_rows(monkeypatch):
    """Wide rows make short chunks: a chunk closes once its text reaches CHUNK_CHARS, so
    the memory a load holds does not grow with the rows' width (20,000 rows of 1 MiB
    would otherwise be one chunk)."""
    from apps.ingestions.engine.parse import parse_chunks
    from apps.ingestions.engine.reader import ByteStream, read_lines

    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_CHARS", 2_000)
    wide = [customer_row(customer_id=uid(f"c{i}"), name="x" * 240) for i in range(20)]
    lines = read_lines(
        ByteStream(io.BytesIO(ndjson_bytes(wide)), max_bytes=1 << 30), max_line_bytes=1 << 20
    )
    chunks = list(parse_chunks(RECORDS["customers"], lines, chunk_rows=1_000))
    assert sum(c.rows for c in chunks) == 20
    assert len(chunks) > 3
    assert all(len(c.text) < 2_000 + 500 for c in chunks)  # at most one row past the limit
    assert [c.first_line for c in chunks[1:]] == [c.last_line + 1 for c in chunks[:-1]]
