"""Streaming reader: compressed or plain bytes in, numbered physical lines out.

Owns decompression (gzip, zstd, sniffed from the magic bytes), the decompression-bomb
guard, the line-length limit, a leading UTF-8 BOM and CRLF endings. Memory stays bounded
by the chunk size plus the line limit, whatever the file size.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

import zstandard

from apps.ingestions.engine.results import FileError

CHUNK_BYTES = 1 << 20
BOMB_MIN_BYTES = 16 * 1024 * 1024  # the ratio test applies past this much output
BOMB_MAX_RATIO = 100
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"
_ZSTD_PIECE = 256  # compressed bytes per decompress call: bounds each call's output
RAW_PREFIX = 1024  # how much of an over-long line a reject keeps


def raw_prefix(data: bytes) -> bytes:
    """The first `RAW_PREFIX` bytes of an over-long line, less a UTF-8 character the cut
    goes through (it would show as U+FFFD at the end of the reject's `raw`)."""
    prefix = data[:RAW_PREFIX]
    if len(data) <= RAW_PREFIX:
        return prefix
    start = len(prefix)  # back over the continuation bytes (10xxxxxx) at the end
    while start > len(prefix) - 3 and start > 0 and prefix[start - 1] & 0xC0 == 0x80:
        start -= 1
    if start == 0:
        return prefix
    lead = prefix[start - 1]
    size = (
        2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
    )
    return prefix[: start - 1] if len(prefix) - (start - 1) < size else prefix


class Line(NamedTuple):
    """One physical line (without its line ending). `too_long` lines carry only a prefix."""

    number: int
    data: bytes
    too_long: bool


class _CountingReader:
    """Wraps the raw stream to count the (compressed) bytes consumed."""

    def __init__(self, raw: BinaryIO, head: bytes):
        self._raw = raw
        self._head = head
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            if size is not None and 0 <= size < len(data):
                data, self._head = data[:size], data[size:]
        else:
            data = self._raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


class ByteStream:
    """Decompressed chunks of a raw stream, with the bomb guard applied as they come."""

    def __init__(self, raw: BinaryIO, *, max_bytes: int):
        head = b""
        while len(head) < 4:  # a socket-like stream may answer with fewer bytes
            more = raw.read(4 - len(head))
            if not more:
                break
            head += more
        self._source = _CountingReader(raw, head)
        self.compression = (
            "gzip"
            if head.startswith(_GZIP_MAGIC)
            else "zstd"
            if head.startswith(_ZSTD_MAGIC)
            else None
        )
        self.max_bytes = max_bytes
        self.bytes_out = 0

    @property
    def bytes_in(self) -> int:
        return self._source.count

    def chunks(self) -> Iterator[bytes]:
        if self.compression == "gzip":
            stream = gzip.GzipFile(fileobj=self._source, mode="rb")
        elif self.compression == "zstd":
            yield from self._zstd_chunks()
            return
        else:
            stream = self._source
        while True:
            try:
                chunk = stream.read(CHUNK_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raise FileError(
                    "invalid_compression", f"The {self.compression} data cannot be read: {exc}"
                ) from exc
            if not chunk:
                return
            self.bytes_out += len(chunk)
            self._guard()
            yield chunk

    def _zstd_chunks(self) -> Iterator[bytes]:
        """zstd frames, one after another. Fed in small pieces so one call can never expand
        into more than a few MiB (an RLE block of 3 bytes can stand for 128 KiB), and a
        frame cut short is an error, not a silent end of file."""
        zstd = zstandard.ZstdDecompressor()
        frame = zstd.decompressobj()
        in_frame = False
        buffered: list[bytes] = []
        size = 0
        try:
            while raw := self._source.read(CHUNK_BYTES):
                for start in range(0, len(raw), _ZSTD_PIECE):
                    piece = raw[start : start + _ZSTD_PIECE]
                    while piece:
                        in_frame = True
                        out = frame.decompress(piece)
                        piece = b""
                        if frame.eof:
                            piece, in_frame = frame.unused_data, False
                            frame = zstd.decompressobj()
                        if out:
                            self.bytes_out += len(out)
                            self._guard()
                            buffered.append(out)
                            size += len(out)
                if size >= CHUNK_BYTES:  # hand out big chunks: the line splitter likes them
                    yield b"".join(buffered)
                    buffered, size = [], 0
        except zstandard.ZstdError as exc:
            raise FileError("invalid_compression", f"The zstd data cannot be read: {exc}") from exc
        if in_frame:
            raise FileError("invalid_compression", "The zstd data ends in the middle of a frame.")
        if buffered:
            yield b"".join(buffered)

    def _guard(self) -> None:
        if self.compression is None:
            return
        if self.bytes_out > self.max_bytes:
            raise FileError(
                "decompression_bomb",
                f"Decompressed data exceeds the limit of {self.max_bytes} bytes.",
            )
        if self.bytes_out > BOMB_MIN_BYTES and self.bytes_out > BOMB_MAX_RATIO * max(
            self.bytes_in, 1
        ):
            raise FileError(
                "decompression_bomb",
                f"Compression ratio above {BOMB_MAX_RATIO}:1 "
                f"({self.bytes_out} bytes from {self.bytes_in}).",
            )


def read_lines(stream: ByteStream, *, max_line_bytes: int) -> Iterator[Line]:
    """Yield every physical line, numbered from 1, blank ones included.

    A line longer than `max_line_bytes` is yielded once with `too_long=True` and its first
    bytes only; the rest of it is skipped without being held in memory.
    """
    number = 0
    pending = b""  # the unfinished last line of the previous chunk
    skipping = False  # inside an over-long line: drop bytes until its end
    first = True
    for chunk in stream.chunks():
        if first:
            first = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        parts = chunk.split(b"\n")
        tail = parts.pop()
        if parts:
            if skipping:
                parts[0] = None  # the end of an over-long line, already reported
                skipping = False
            elif pending:
                parts[0] = pending + parts[0]
            pending = b""
            for piece in parts:
                if piece is None:
                    continue
                number += 1
                if piece.endswith(b"\r"):
                    piece = piece[:-1]
                if len(piece) > max_line_bytes:
                    yield Line(number, raw_prefix(piece), True)
                else:
                    yield Line(number, piece, False)
        if skipping:
            continue
        pending += tail
        # one byte of slack: a trailing "\r" is part of the line ending, not the line
        if len(pending) > max_line_bytes + 1 or (
            len(pending) == max_line_bytes + 1 and not pending.endswith(b"\r")
        ):
            number += 1
            yield Line(number, raw_prefix(pending), True)
            pending = b""
            skipping = True
    if pending and not skipping:
        if pending.endswith(b"\r"):
            pending = pending[:-1]
        yield Line(number + 1, pending, len(pending) > max_line_bytes)


def decompress_prefix(data: bytes, *, max_bytes: int) -> bytes:
    """What a file's first bytes, cut anywhere (a blob's head), decompress to: gzip or zstd
    undone as far as `data` goes, without the error a cut stream raises, and at most
    `max_bytes` of it; plain bytes as they are. For a look at the first rows only."""
    if data.startswith(_GZIP_MAGIC):
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, max_bytes)
        except zlib.error:
            return b""
    if not data.startswith(_ZSTD_MAGIC):
        return data
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    out: list[bytes] = []
    size = 0
    try:
        while size < max_bytes and (piece := reader.read(min(CHUNK_BYTES, max_bytes - size))):
            out.append(piece)
            size += len(piece)
    except zstandard.ZstdError:
        pass  # cut mid-frame: what came before is kept
    return b"".join(out)
