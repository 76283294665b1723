"""Uploaded bytes in PostgreSQL: blobs stored piece by piece as they arrive, read back as streams.

Pieces are 1 MiB; any worker on any machine reads a blob back, and nothing is ever held whole
in memory. A blob is sealed when its `sha256` is set: all its pieces are in. A reader that
follows (`BlobReader(follow=True)`) reads a blob still being written, piece by piece as each
commits, to the seal (docs/engine.md#process-while-receiving).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

import psycopg
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.core.errors import PayloadTooLargeError
from apps.ingestions import engine
from apps.ingestions.models import Blob, Upload, UploadSession

CHUNK_BYTES = 1 << 20
HEAD_BYTES = 256 * 1024  # kept on the blob row: enough to tell a file's type
_FOLLOW_WAITS = (0.005, 0.01, 0.02, 0.05, 0.1)  # seconds between looks for the next piece


class ReceiveBehind(Exception):
    """A following reader waited longer in all than INGEST_RECEIVE_PATIENCE_SECONDS for
    pieces, and longer than it was read meanwhile: the bytes arrive much slower than they
    are loaded, and its worker is better used elsewhere until they are all in."""


class BlobGone(Exception):
    """The blob a reader follows was deleted before its seal: its upload was cancelled
    while its bytes were arriving (the client went away, or they were bytes received
    before)."""


class BodyPieces:
    """A body cut into a blob's pieces as it is read: at most `CHUNK_BYTES` each, and a
    smaller one once `flush_seconds` have passed with bytes pending; read `read_bytes` at
    a time (a server's read returns only once it has every byte asked for); its sha256,
    size and first bytes computed on the way; past `limit` bytes, a 413. `first`: bytes
    of the body read already."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        limit: int,
        first: bytes = b"",
        read_bytes: int = CHUNK_BYTES,
        flush_seconds: float | None = None,
    ):
        self._stream, self._limit, self._first = stream, limit, first
        self._read_bytes, self._flush_seconds = read_bytes, flush_seconds
        self._digest = hashlib.sha256()
        self.size = 0
        self.head = b""

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _take(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise PayloadTooLargeError(
                f"The upload is larger than the limit of {self._limit} bytes."
            )
        self._digest.update(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]

    def __iter__(self) -> Iterator[bytes]:
        self._take(self._first)
        piece, pending, started = [self._first], len(self._first), time.monotonic()
        while data := self._stream.read(min(self._read_bytes, CHUNK_BYTES - pending)):
            self._take(data)
            piece.append(data)
            pending += len(data)
            late = self._flush_seconds is not None and (
                time.monotonic() - started >= self._flush_seconds
            )
            if pending >= CHUNK_BYTES or late:
                yield b"".join(piece)
                piece, pending, started = [], 0, time.monotonic()
        if pending:
            yield b"".join(piece)


@transaction.atomic
def blob_store(*, stream: BinaryIO, max_bytes: int | None = None) -> Blob:
    """Copy a stream into a new blob, computing its sha256 and size on the way."""
    limit = settings.INGEST_MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    blob = Blob.objects.create(sha256="", size_bytes=0)
    pieces = BodyPieces(stream, limit=limit)
    for seq, piece in enumerate(pieces):
        blob_write_piece(blob.id, seq, piece)
    blob.sha256, blob.size_bytes, blob.head = pieces.sha256, pieces.size, pieces.head
    blob.save(update_fields=["sha256", "size_bytes", "head"])
    return blob


def blob_write_piece(blob_id: int, seq: int, data: bytes) -> None:
    """Insert one piece of a blob on the default connection, in its transaction. The bytes
    go as a binary parameter: through the ORM they would be hex-escaped into the SQL text
    and parsed back by the server, which made storing an upload about five times slower."""
    connection.ensure_connection()
    # a server-side binding cursor (Django's own bind on the client, as SQL text); errors
    # come out as Django's, and mark the connection as Django's own cursors would
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            "INSERT INTO blob_chunks (blob_id, seq, data) VALUES (%s, %s, %b)",
            (blob_id, seq, data),
        )


def incomplete_upload(seconds: int, after: int | None = None) -> engine.FileError:
    """The error of an upload whose bytes stopped arriving before their end."""
    where = "" if after is None else f" after {after} bytes"
    return engine.FileError(
        "incomplete_upload",
        f"The file's bytes stopped arriving{where}, for {seconds} s (the connection that "
        "sent them was lost); nothing of this file was loaded.",
    )


class BlobReader:
    """A read-only, rewindable file over a blob's chunks, on a connection of its own (so it
    can be read while the caller's connection is busy loading), or on the caller's."""

    def __init__(self, blob_id: int, *, shared: bool = False, follow: bool = False):
        self.blob_id = blob_id
        # shared: read on the default connection (inside its transaction, between its
        # statements) instead of a connection of its own
        self._shared = shared
        self._conn = connection if shared else connections.create_connection("default")
        # follow: the blob may still be written; a missing piece is waited for until the
        # blob is sealed (the end), deleted (`BlobGone`), or no piece came for
        # INGEST_RECEIVE_STALL_SECONDS (its writer died: FileError `incomplete_upload`);
        # past INGEST_RECEIVE_PATIENCE_SECONDS of waits in all that are also more than
        # half its time since its first read, `ReceiveBehind` (`_behind`)
        self.follow = follow
        self._first_read: float | None = None
        self._waited = 0.0
        self._seq = 0
        self._buffer = memoryview(b"")
        self._eof = False
        self._position = 0

    def _fetch(self) -> None:
        waits, since = iter(_FOLLOW_WAITS), time.monotonic()
        if self._first_read is None:
            self._first_read = since
        while (data := self._piece()) is None and self.follow:
            if self._sealed():  # the piece may have committed since the look above
                data = self._piece()
                break
            if time.monotonic() - since > settings.INGEST_RECEIVE_STALL_SECONDS:
                raise incomplete_upload(settings.INGEST_RECEIVE_STALL_SECONDS, self._position)
            if self._behind():
                raise ReceiveBehind(f"blob {self.blob_id}: its pieces come slower than read")
            pause = next(waits, _FOLLOW_WAITS[-1])
            time.sleep(pause)
            self._waited += pause
        if data is None:
            self._eof = True
            self._buffer = memoryview(b"")
        else:
            self._buffer = memoryview(data)
            self._seq += 1

    def _behind(self) -> bool:
        """Has it waited for pieces past its patience, and longer than its reader worked?
        A load the bytes keep nearly up with goes on: given up, the work done so far
        would be rolled back and done again (four big files received at once kept a
        worker waiting 3 s in 10, then threw its 10 s away). A sender much slower than the
        load keeps the worker waiting most of the time, and still loses it soon."""
        if self._waited <= settings.INGEST_RECEIVE_PATIENCE_SECONDS:
            return False
        return self._waited > time.monotonic() - self._first_read - self._waited

    def _query(self, sql: str, params: tuple):
        self._conn.ensure_connection()
        # binary: the bytes as they are, not hex-encoded by the server and decoded here
        with self._conn.wrap_database_errors, psycopg.Cursor(self._conn.connection) as cursor:
            cursor.execute(sql, params, binary=True)
            return cursor.fetchone()

    def _piece(self) -> bytes | None:
        row = self._query(
            "SELECT data FROM blob_chunks WHERE blob_id = %s AND seq = %s",
            (self.blob_id, self._seq),
        )
        return None if row is None else bytes(row[0])

    def _sealed(self) -> bool:
        """Is the blob sealed (every piece in)? Raises BlobGone when it was deleted. A piece
        commits before the seal does, so once sealed, a missing piece is the end."""
        row = self._query("SELECT sha256 FROM blobs WHERE id = %s", (self.blob_id,))
        if row is None:
            raise BlobGone(f"blob {self.blob_id} was deleted while being read")
        return row[0] != ""

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK_BYTES):
                parts.append(chunk)
            return b"".join(parts)
        if not self._buffer and not self._eof:
            self._fetch()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        self._position += len(data)
        return bytes(data)

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("a blob can only be rewound to its start")
        self._seq, self._buffer, self._eof, self._position = 0, memoryview(b""), False, 0
        return 0

    def close(self) -> None:
        if not self._shared:
            self._conn.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def blob_purge_orphans(*, older_than_seconds: int = 3600) -> int:
    """Delete blobs no upload or session points to (a request that failed half-way), once
    they are old enough not to belong to a request still running."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    orphans = (
        Blob.objects.filter(created_at__lt=cutoff)
        .exclude(Exists(Upload.objects.filter(blob_id=OuterRef("id"))))
        .exclude(Exists(UploadSession.objects.filter(blob_id=OuterRef("id"))))
    )
    return orphans.delete()[0]
