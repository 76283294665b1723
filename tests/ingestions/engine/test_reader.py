"""The reader: compressed or plain bytes in, numbered physical lines out (SPEC 3 and 5)."""

from __future__ import annotations

import gzip
import io
import json
import os
import uuid

import pytest
import zstandard

from apps.ingestions.engine.reader import CHUNK_BYTES, ByteStream, read_lines
from apps.ingestions.engine.results import FileError
from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Customer, Reject, UploadState
from tests.factories import assert_counts_add_up, rejects_of

BOM = b"\xef\xbb\xbf"
NO_LIMIT = 1 << 40


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


class ShortReads:
    """A binary stream that hands out at most `size` bytes per read, as a socket may."""

    def __init__(self, data: bytes, size: int):
        self._data = io.BytesIO(data)
        self._size = size

    def read(self, size: int = -1) -> bytes:
        size = self._size if size is None or size < 0 else min(size, self._size)
        return self._data.read(size)


def lines_of(raw, *, max_line_bytes: int = 1000, max_bytes: int = NO_LIMIT):
    """Every line the reader yields for `raw` (bytes or a stream) as plain tuples."""
    stream = io.BytesIO(raw) if isinstance(raw, bytes) else raw
    source = ByteStream(stream, max_bytes=max_bytes)
    return [tuple(line) for line in read_lines(source, max_line_bytes=max_line_bytes)]


def customers(n: int, *, start: int = 0, **overrides) -> list[dict]:
    return [customer_row(customer_id=uid(f"c{i}"), **overrides) for i in range(start, start + n)]


# --- read_lines directly ------------------------------------------------------------------


def test_lines_are_numbered_by_physical_line_from_one():
    """Every physical line gets the next number from 1, blank and whitespace ones included."""
    assert lines_of(b"a\n\nb\n  \nc") == [
        (1, b"a", False),
        (2, b"", False),
        (3, b"b", False),
        (4, b"  ", False),
        (5, b"c", False),
    ]


def test_an_empty_input_has_no_lines():
    """Zero bytes are zero lines; a lone newline is one blank line."""
    assert lines_of(b"") == []
    assert lines_of(b"\n") == [(1, b"", False)]


def test_a_leading_bom_is_dropped_but_only_at_the_start():
    """A UTF-8 BOM before the first line is not data; one later in the file is left alone."""
    assert lines_of(BOM + b"a\n" + BOM + b"b\n") == [(1, b"a", False), (2, BOM + b"b", False)]


def test_crlf_line_endings_are_stripped():
    """CRLF and LF endings give the same lines, a blank CRLF line included."""
    assert lines_of(b"a\r\nb\r\n\r\nc\nd\r\n") == [
        (1, b"a", False),
        (2, b"b", False),
        (3, b"", False),
        (4, b"c", False),
        (5, b"d", False),
    ]


def test_a_line_over_the_limit_is_yielded_once_as_a_prefix_and_the_rest_follows():
    """An over-long line is one too_long line carrying a bounded prefix; later lines keep
    their physical numbers."""
    found = lines_of(b"short\n" + b"x" * 5000 + b"\nok\n", max_line_bytes=10)
    assert [(number, too_long) for number, _, too_long in found] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    assert found[0][1] == b"short"
    assert found[2][1] == b"ok"
    assert set(found[1][1]) == {ord("x")}
    assert 10 < len(found[1][1]) <= 1024


def test_a_line_longer_than_several_chunks_is_one_too_long_line():
    """A line spanning several read chunks is reported once and skipped to its end."""
    data = b"a\n" + b"x" * (3 * CHUNK_BYTES + 17) + b"\nb\n"
    found = lines_of(data, max_line_bytes=1000)
    assert [(number, too_long) for number, _, too_long in found] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    assert (found[0][1], found[2][1]) == (b"a", b"b")


@pytest.mark.parametrize(
    ("data", "max_line_bytes", "expected"),
    [
        pytest.param(b"abcd\nef\n", 4, [(1, b"abcd", False), (2, b"ef", False)], id="lf"),
        pytest.param(b"abcd\r\nef\r\n", 4, [(1, b"abcd", False), (2, b"ef", False)], id="crlf"),
        pytest.param(b"ef\nabcd", 4, [(1, b"ef", False), (2, b"abcd", False)], id="last-line"),
        pytest.param(b"abcde\nef\n", 4, [(1, b"abcde", True), (2, b"ef", False)], id="one-over"),
        pytest.param(
            b"abc\r\nd\r\n",
            3,
            [(1, b"abc", False), (2, b"d", False)],
            id="crlf-cr-at-chunk-end",
        ),
    ],
)
def test_a_line_exactly_at_the_limit_is_not_too_long(data, max_line_bytes, expected):
    """The limit counts the line without its ending: a line of exactly the limit is kept."""
    assert lines_of(data, max_line_bytes=max_line_bytes) == expected


def test_a_crlf_line_exactly_at_the_limit_on_a_chunk_boundary_is_not_too_long():
    """With the default 1 MiB chunks, a CRLF line of exactly the limit whose CR is the last
    byte of a chunk is still a normal line."""
    limit = 64
    # The first chunk is the 4 sniffed bytes, then CHUNK_BYTES per read: put the CR of the
    # target line at the last byte of the second chunk.
    start = 4 + CHUNK_BYTES - 1 - limit
    filler = (b"y" * 9 + b"\n") * (start // 10) + b"y" * (start % 10 - 1) + b"\n"
    assert len(filler) == start
    data = filler + b"x" * limit + b"\r\nz\n"
    found = lines_of(data, max_line_bytes=limit)
    assert [line for line in found if line[2]] == []
    assert found[-2:] == [(len(found) - 1, b"x" * limit, False), (len(found), b"z", False)]


def test_gzip_members_and_zstd_frames_are_read_as_one_stream():
    """Multi-member gzip and multi-frame zstd are concatenated; a line may span members."""
    expected = [(1, b"abc", False), (2, b"d", False)]
    assert lines_of(gzip.compress(b"ab") + gzip.compress(b"c\nd\n")) == expected
    assert lines_of(_zstd(b"ab") + _zstd(b"c\nd\n")) == expected


def _messy(compression: str | None) -> bytes:
    plain = BOM + b"a\r\n\r\n" + b"x" * 3000 + b"\r\nbb\ncc"
    if compression == "gzip":
        return gzip.compress(plain)
    if compression == "zstd":
        return _zstd(plain)
    return plain


_MESSY_LINES = [(1, b"a", False), (2, b"", False), (3, True), (4, b"bb", False), (5, b"cc", False)]


def _shape(found):
    return [(n, t) if t else (n, d, t) for n, d, t in found]


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_lines_do_not_depend_on_how_the_stream_is_chunked(compression):
    """A stream returning 7 bytes per read gives the same lines as one returning everything."""
    data = _messy(compression)
    assert _shape(lines_of(data)) == _MESSY_LINES
    assert _shape(lines_of(ShortReads(data, 7))) == _MESSY_LINES


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_a_stream_returning_one_byte_per_read_still_gives_the_same_lines(compression):
    """The BOM and the compression magic are recognised even when a read returns one byte."""
    assert _shape(lines_of(ShortReads(_messy(compression), 1))) == _MESSY_LINES


def test_an_ordinary_compression_ratio_past_16_mib_is_not_a_bomb():
    """Over 16 MiB of output is fine while the ratio stays below 100:1."""
    plain = (os.urandom(9 * 1024 * 1024).hex() + "\n").encode()
    source = ByteStream(io.BytesIO(gzip.compress(plain, compresslevel=1)), max_bytes=NO_LIMIT)
    assert sum(len(chunk) for chunk in source.chunks()) == len(plain)


def test_output_past_the_absolute_limit_is_a_bomb_whatever_the_ratio():
    """The configured decompressed-size limit applies to compressed input of any ratio."""
    source = ByteStream(io.BytesIO(gzip.compress(os.urandom(4096))), max_bytes=1000)
    with pytest.raises(FileError) as caught:
        list(source.chunks())
    assert caught.value.code == "decompression_bomb"


# --- through the service --------------------------------------------------------------------


def test_a_file_with_a_bom_and_crlf_endings_loads_every_row(tenant, ndjson, load):
    """A BOM and CRLF endings (Windows tools) do not cost a row."""
    rows = [json.dumps(row) for row in customers(3)]
    path = ndjson("customers_1.ndjson", [])
    path.write_bytes(BOM + "\r\n".join(rows).encode() + b"\r\n")
    upload = load(tenant, path)
    assert (upload.state, upload.rows_total, upload.rows_inserted) == ("completed", 3, 3)
    assert Customer.objects.filter(tenant=tenant).count() == 3


def test_blank_lines_count_as_lines_but_not_rows(tenant, ndjson, load):
    """Blank and whitespace lines are skipped for rows.total, yet reject line numbers are
    physical lines."""
    c1, c2 = customers(2)
    upload = load(tenant, ndjson("customers_1.ndjson", ["", c1, "", "   \t", "{", c2, ""]))
    assert (upload.rows_total, upload.rows_inserted, upload.rows_rejected) == (3, 2, 1)
    assert rejects_of(upload) == [(5, "", "invalid_json")]
    assert_counts_add_up(upload)


_C9 = uid("c9").encode()


@pytest.mark.parametrize(
    ("line", "offset", "bad", "reason"),
    [
        (b'{"customer_id": "\xff\xfe", "name": "x"}', 17, b"\xff", "invalid start byte"),
        (
            b'{"customer_id": "' + _C9 + b'", "name": "Ada \xc3"}',
            69,
            b"\xc3",
            "invalid continuation byte",
        ),
        (
            b'{"customer_id": "' + _C9 + b'", "name": "\xe2\x82"}',
            65,
            b"\xe2\x82",
            "invalid continuation byte",
        ),
        (b'{"name\xe9": "x"}', 6, b"\xe9", "invalid continuation byte"),
        (b'{"name": "caf\xc3\xa9", "email": "a\x80b"}', 29, b"\x80", "invalid start byte"),
    ],
)
def test_an_invalid_utf8_reject_gives_the_offset_of_the_bad_byte_in_its_line(
    tenant, ndjson, load, line, offset, bad, reason
):
    """The message of a line that is not UTF-8 names the offset of its first bad byte from
    the start of the line (the decoder's own counts from the start of the JSON string)."""
    assert line[offset : offset + len(bad)] == bad
    upload = load(tenant, ndjson("customers_1.ndjson", [customer_row(), line]))
    assert rejects_of(upload) == [(2, "", "invalid_json")]
    shown = " ".join(f"0x{byte:02x}" for byte in bad)
    assert Reject.objects.get(upload=upload).message == (
        f"the line is not valid UTF-8 at byte offset {offset} "
        f"(the line's first byte is offset 0): {shown}, {reason}"
    )


def test_reject_line_numbers_are_physical_lines_of_the_decompressed_file(tenant, ndjson, load):
    """In a gzip file, a bad row's line number counts the decompressed lines, blanks too."""
    c1, c2 = customers(2)
    rows = [c1, "", customer_row(customer_id=uid("c7"), email="nope"), "", "", c2, "[1]"]
    upload = load(tenant, ndjson("customers_1.ndjson.gz", rows, compression="gzip"))
    assert rejects_of(upload) == [(3, "email", "invalid_email"), (7, "", "not_an_object")]
    assert (upload.rows_total, upload.rows_inserted) == (4, 2)


def test_a_line_over_the_configured_limit_is_one_reject_and_the_rest_loads(
    settings, tenant, ndjson, load
):
    """INGEST_MAX_LINE_BYTES applies through the service: one line_too_long reject for the
    long line, every other row inserted."""
    settings.INGEST_MAX_LINE_BYTES = 400
    c1, c2, c3 = customers(3)
    long = customer_row(customer_id=uid("long"), note="n" * 5000)
    upload = load(tenant, ndjson("customers_1.ndjson", [c1, long, c2, "", c3]))
    assert (upload.state, upload.rows_total) == ("completed_with_errors", 4)
    assert (upload.rows_inserted, upload.rows_rejected) == (3, 1)
    assert rejects_of(upload) == [(2, "", "line_too_long")]
    loaded = set(Customer.objects.filter(tenant=tenant).values_list("customer_id", flat=True))
    assert loaded == {uuid.UUID(c["customer_id"]) for c in (c1, c2, c3)}
    reject = Reject.objects.get(upload=upload)
    assert reject.raw.startswith('{"customer_id"')
    assert len(reject.raw) <= 1024


@pytest.mark.parametrize(
    ("filename", "compression", "members"),
    [
        ("customers_1.ndjson.gz", "gzip", 1),
        ("customers_1.ndjson.gz", "gzip", 3),
        ("customers_1.jsonl.zst", "zstd", 1),
        ("customers_1.jsonl.zst", "zstd", 3),
    ],
)
def test_gzip_and_zstd_files_load_like_plain_ones(
    tenant, ndjson, load, filename, compression, members
):
    """Compressed input, single or multi-member/frame, loads every row; size_bytes is the
    compressed size as received."""
    rows = customers(6)
    per = len(rows) // members
    data = b"".join(
        ndjson_bytes(rows[i * per : (i + 1) * per], compression=compression) for i in range(members)
    )
    path = ndjson(filename, [])
    path.write_bytes(data)
    upload = load(tenant, path)
    assert (upload.state, upload.rows_total, upload.rows_inserted) == ("completed", 6, 6)
    assert upload.size_bytes == len(data)
    assert Customer.objects.filter(tenant=tenant).count() == 6


def _gzip_rows(n: int) -> bytes:
    return ndjson_bytes(customers(n), compression="gzip")


def _zstd_rows(n: int) -> bytes:
    return ndjson_bytes(customers(n), compression="zstd")


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x1f\x8b" + b"not really gzip" * 20, id="gzip-garbage"),
        pytest.param(_gzip_rows(50)[:-30], id="gzip-truncated"),
        pytest.param(_flip(_gzip_rows(50), -8), id="gzip-bad-crc"),
        pytest.param(_flip(_gzip_rows(12_000), -8), id="gzip-bad-crc-after-1mib"),
        pytest.param(b"\x28\xb5\x2f\xfd" + b"not really zstd" * 20, id="zstd-garbage"),
        pytest.param(_gzip_rows(20_000)[:200_000], id="gzip-truncated-half"),
        pytest.param(_zstd_rows(50)[:-30], id="zstd-truncated"),
        pytest.param(_zstd_rows(20_000)[:200_000], id="zstd-truncated-half"),
    ],
)
def test_unreadable_compression_fails_the_upload_and_loads_nothing(tenant, ndjson, load, data):
    """Corrupt or truncated gzip/zstd ends `failed` with invalid_compression, no rows, no
    rejects."""
    path = ndjson("customers_1.ndjson.gz", [])
    path.write_bytes(data)
    upload = load(tenant, path)
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "invalid_compression")
    assert upload.error_detail
    assert (upload.rows_inserted, upload.rows_rejected) == (0, 0)
    assert Customer.objects.filter(tenant=tenant).count() == 0
    assert Reject.objects.filter(upload=upload).count() == 0


def _bomb(compression: str) -> bytes:
    """About 17 MiB of valid, distinct customer rows padded with one repeated letter."""
    rows = [customer_row(customer_id=uid(f"b{i}"), pad="x" * 100_000) for i in range(175)]
    data = ndjson_bytes(rows, compression=compression)
    assert len(ndjson_bytes(rows)) > 16 * 1024 * 1024
    assert len(ndjson_bytes(rows)) > 100 * len(data)
    return data


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_highly_compressible_file_over_16_mib_is_a_decompression_bomb(
    tenant, ndjson, load, compression
):
    """Past 16 MiB of output at a ratio above 100:1 the upload fails and nothing loads."""
    path = ndjson("customers_1.ndjson", [])
    path.write_bytes(_bomb(compression))
    upload = load(tenant, path)
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "decompression_bomb")
    assert Customer.objects.filter(tenant=tenant).count() == 0
    assert Reject.objects.filter(upload=upload).count() == 0
    assert upload.rows_inserted == 0


def test_the_configured_decompressed_limit_makes_a_bomb(settings, tenant, ndjson, load):
    """INGEST_MAX_DECOMPRESSED_BYTES caps the output of a compressed upload."""
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 2000
    rows = customers(20)
    assert len(ndjson_bytes(rows)) > 2000
    upload = load(tenant, ndjson("customers_1.ndjson.zst", rows, compression="zstd"))
    assert (upload.state, upload.error_code) == (UploadState.FAILED, "decompression_bomb")
    assert Customer.objects.filter(tenant=tenant).count() == 0


def test_a_compressed_file_under_the_configured_limit_loads(settings, tenant, ndjson, load):
    """The same limit leaves a file that decompresses to less alone."""
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 20_000
    upload = load(tenant, ndjson("customers_1.ndjson.gz", customers(20), compression="gzip"))
    assert (upload.state, upload.rows_inserted) == ("completed", 20)


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("x" + "é" * 1000, "x" + "é" * 511),  # the cut went through the 512th é
        ("é" * 1000, "é" * 512),  # the cut falls between two
        ("xx" + "€" * 1000, "xx" + "€" * 340),  # three bytes each
        ("x" + "😀" * 1000, "x" + "😀" * 255),  # four bytes each
    ],
    ids=["two-byte", "between", "three-byte", "four-byte"],
)
def test_an_over_long_line_keeps_whole_characters_of_its_first_bytes(line, kept):
    """A reject's `raw` of an over-long line is its first RAW_PREFIX bytes, less a UTF-8
    character the cut goes through (it ended in U+FFFD)."""
    [(_, data, too_long)] = lines_of(line.encode() + b"\n", max_line_bytes=100)
    assert too_long
    assert data.decode() == kept
