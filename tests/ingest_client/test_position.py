"""`stream --position`: a stream started again goes on after the last line the server
answered for; the file it reads is told apart from one that replaced or truncated it; a
partial line left when a followed stream stops waits for the next stream."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from apps.ingestions.models import Customer
from apps.tenants.services import tenant_create
from ingest_client import stream as stream_command
from ingest_client.position import FileReader, Position, Start
from tests.ingest_client.test_live import ROOT, lines, stream, wait_for
from tests.ingest_client.test_live_edges import Answers


def start_of(path, offset: int, line: int) -> Start:
    """The position after the first `line` lines (`offset` bytes) of the file at `path`."""
    import hashlib

    info = os.stat(path)
    head = path.read_bytes()[: min(offset, 4096)]
    return Start(info.st_dev, info.st_ino, offset, line, hashlib.sha256(head).hexdigest())


def read_all(reader: FileReader) -> list[bytes]:
    return list(reader.lines())


def test_a_reader_goes_on_from_the_position_of_the_same_file(tmp_path):
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\nbb\nccc\n")
    notes: list[str] = []
    reader = FileReader(
        path, stop=threading.Event(), follow=False, start=start_of(path, 5, 2), note=notes.append
    )
    assert read_all(reader) == [b"ccc\n"]
    assert reader.resumed
    assert (reader.mark.offset, reader.mark.line) == (9, 3)
    assert notes == [f"going on after line 2 of {path}"]


@pytest.mark.parametrize("change", ["replaced", "truncated", "rewritten"])
def test_a_reader_reads_from_the_start_a_file_that_is_not_the_one_of_its_position(tmp_path, change):
    """Another inode (rotation), a file shorter than the position, or the same inode whose
    first bytes differ (a new file given the old inode): read from the start, and said."""
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\nbb\nccc\n")
    start = start_of(path, 5, 2)
    if change == "replaced":
        (tmp_path / "new").write_bytes(b"x\nyy\nzzz\n")
        os.replace(tmp_path / "new", path)
    elif change == "truncated":
        path.write_bytes(b"a\n")
    else:
        with path.open("r+b") as same:
            same.write(b"q")
    notes: list[str] = []
    reader = FileReader(path, stop=threading.Event(), follow=False, start=start, note=notes.append)
    got = read_all(reader)
    assert not reader.resumed
    assert got == path.read_bytes().splitlines(keepends=True)
    assert reader.mark.line == len(got)
    assert "replaced or truncated" in notes[0]


def test_a_followed_partial_line_waits_for_the_next_stream_when_there_is_a_position(tmp_path):
    """Stopped while the writer is mid-line: without a position the partial line is sent
    (the old behaviour); with one it is left, and the position ends before it."""
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\nhalf")
    for partial_at_stop, expected in ((True, [b"a\n", b"half"]), (False, [b"a\n"])):
        stop = threading.Event()
        reader = FileReader(path, stop=stop, partial_at_stop=partial_at_stop, interval=0.01)
        threading.Timer(0.3, stop.set).start()  # once the reader waits at the partial line
        assert list(reader.lines()) == expected
    assert reader.mark.offset == 2


def test_a_position_moves_only_past_lines_answered_for_and_never_past_a_failure(tmp_path):
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\n\nb\nc\n")
    reader = FileReader(path, stop=threading.Event(), follow=False)
    position = Position(tmp_path / "pos", path)
    queued = 0
    for line in reader.lines():
        queued += bool(line.strip())  # a blank line is not queued
        position.read(queued, reader.mark)
    position.settle(sent=1, failed=0)
    assert position.settled.line == 2  # "a" and the blank line after it
    position.save()
    position.settle(sent=2, failed=1)  # a batch failed: the counts are no prefix any more
    assert position.settled.line == 2
    again = Position(tmp_path / "pos", path).load()
    assert (again.offset, again.line) == (3, 2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not a position file"),
        ('{"device": 1}', "is not a position file ('inode')"),
        (
            '{"file": "/elsewhere", "device": 1, "inode": 2, "offset": 3, "line": 1, '
            '"head_sha256": ""}',
            "is the position of /elsewhere, not of",
        ),
        (
            '{"file": "x", "device": 1, "inode": 2, "offset": -3, "line": 1, "head_sha256": ""}',
            "offset and line must be counts",
        ),
    ],
    ids=["garbage", "incomplete", "another-file", "negative"],
)
def test_a_bad_position_file_is_an_error_before_anything_is_sent(
    tmp_path, capsys, content, message
):
    data = tmp_path / "c.ndjson"
    data.write_text(lines(range(3)))
    position = tmp_path / "pos"
    position.write_text(content)
    code = stream_command.main(
        ["--type", "customers", str(data), "--position", str(position), "--api-key", "k",
         "--api-url", "http://127.0.0.1:9", "--no-progress"]
    )  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err.replace("\n", "")
    assert position.read_text() == content


def test_position_needs_a_file():
    with pytest.raises(SystemExit):
        stream_command.parse_args(["--type", "customers", "--position", "p", "--api-key", "k"])


def run(path, position, api_url: str, api_key: str) -> subprocess.CompletedProcess:
    command = stream(
        "--type", "customers", str(path), "--position", str(position), "--api-url", api_url,
        "--api-key", api_key, "--batch-records", "10", "--retries", "1",
    )  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_a_stream_stopped_by_failures_sends_again_from_the_first_line_not_answered():
    """The server takes the first batch of 10, then fails: the position stays at line 10,
    and the next stream sends lines 11-30 only."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path, position = Path(folder) / "c.ndjson", Path(folder) / "c.position"
        path.write_text(lines(range(30)))
        failing = Answers([202, 500])
        try:
            first = run(path, position, failing.url, "k")
        finally:
            failing.close()
        assert first.returncode == 2, first.stdout + first.stderr
        assert "10 accepted, 0 rejected, 20 not sent" in first.stdout
        assert f"{position} stays at line 10: a stream started again" in first.stderr
        assert json.loads(position.read_text())["line"] == 10
        taking = Answers([202])
        try:
            second = run(path, position, taking.url, "k")
        finally:
            taking.close()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "20 accepted, 0 rejected, 0 not sent" in second.stdout
        assert taking.seen == 2
        assert json.loads(position.read_text())["line"] == 30


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_stream_started_again_sends_only_the_lines_after_its_position(tmp_path, live_stack):
    tenant, issued = tenant_create(name="live-position")
    path, position = tmp_path / "customers.ndjson", tmp_path / "customers.position"
    path.write_text(lines(range(25)))
    first = run(path, position, live_stack, issued.raw)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "25 accepted, 0 rejected, 0 not sent" in first.stdout
    assert json.loads(position.read_text())["line"] == 25
    with path.open("a") as grown:
        grown.write(lines(range(25, 32)) + '{"customer_id": "x"}\n')
    second = run(path, position, live_stack, issued.raw)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "7 accepted, 1 rejected, 0 not sent" in second.stdout
    assert f"going on after line 25 of {path}" in second.stderr
    assert "rejected: line 33 (batch " in second.stderr  # its line in the file
    assert json.loads(position.read_text())["line"] == 33
    rows = Customer.objects.filter(tenant_id=tenant.id)
    wait_for(lambda: rows.count() == 32)
    third = run(path, position, live_stack, issued.raw)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "0 accepted, 0 rejected, 0 not sent" in third.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_stream_killed_outright_loses_no_line(tmp_path, live_stack):
    """SIGKILL (nothing flushed, nothing saved at the end) once a position was saved: the
    next stream sends from the line after it, and every line of the file is a row."""
    import signal

    tenant, issued = tenant_create(name="live-position-kill")
    path, position = tmp_path / "customers.ndjson", tmp_path / "customers.position"
    path.write_text(lines(range(300)))
    command = stream(
        "--type", "customers", str(path), "--follow", "--position", str(position),
        "--api-url", live_stack, "--api-key", issued.raw, "--batch-records", "50",
        "--batch-delay", "60",
    )  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for(lambda: position.exists())
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    saved = json.loads(position.read_text())["line"]
    assert saved % 50 == 0
    assert 0 < saved <= 300
    again = run(path, position, live_stack, issued.raw)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{300 - saved} accepted, 0 rejected, 0 not sent" in again.stdout
    rows = Customer.objects.filter(tenant_id=tenant.id)
    wait_for(lambda: rows.count() == 300)


def test_the_last_line_noted_after_its_batch_was_answered_is_settled_at_the_end(tmp_path):
    """The sender can get the last batch's answer before the reading thread notes where
    that batch's last line ends: the end of the stream settles the position once more."""
    from ingest_client.live import Counts
    from ingest_client.stream import _Saving

    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\n")
    reader = FileReader(path, stop=threading.Event(), follow=False)
    saving = _Saving(Position(tmp_path / "pos", path))
    counts = Counts(queued=1, sent=1, accepted=1, batches=1)
    saving.settle(counts)  # the answer, in the sender's thread
    for _ in reader.lines():
        saving.position.read(1, reader.mark)  # then the line's end, in the reading thread
    assert saving.finish("", counts) == ""
    assert json.loads((tmp_path / "pos").read_text())["line"] == 1
