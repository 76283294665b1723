"""`stream --position`: a stream started again goes on after the last line the server
answered for; the file it reads is told apart from one that replaced or truncated it; a
partial line left when a followed stream stops waits for the next stream."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest

from apps.ingestions.models import Customer
from apps.tenants.services import tenant_create
from ingest_client import stream as stream_command
from ingest_client.position import FileReader, Position, Start
from tests.ingest_client.test_live import (
    ROOT,
    LocalServer,
    QuietHandler,
    ended_by,
    lines,
    stream,
    wait_for,
)
from tests.ingest_client.test_live import customer as customer_of
from tests.ingest_client.test_live_edges import Answers


def start_of(path, offset: int, line: int) -> Start:
    """The position after the first `line` lines (`offset` bytes) of the file at `path`."""
    import hashlib

    info, data = os.stat(path), path.read_bytes()
    head, tail = data[: min(offset, 4096)], data[max(0, offset - 4096) : offset]
    digests = (hashlib.sha256(head).hexdigest(), hashlib.sha256(tail).hexdigest())
    return Start(info.st_dev, info.st_ino, offset, line, *digests)


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
    """Stopped while the last line has no newline: without a position it is sent when it is
    a whole record (written without its newline); half a record (a writer stopped
    mid-line) is not, and is said; with a position it is left, and the position ends
    before it. Half a record was sent, and its reject made the stream's exit 1."""
    path = tmp_path / "c.ndjson"
    cases = [
        (b'{"a": 1}', True, [b"a\n", b'{"a": 1}'], []),
        (b"[" + b"9" * 5000 + b"]", True, [b"a\n", b"[" + b"9" * 5000 + b"]"], []),
        (b'{"a": 1', True, [b"a\n"], ["c.ndjson: the last 7 bytes read have no newline yet"]),
        (b"\xff\xfe", True, [b"a\n"], ["c.ndjson: the last 2 bytes read have no newline yet"]),
        (b'{"a": 1}', False, [b"a\n"], []),
    ]
    for tail, partial_at_stop, expected, said in cases:
        path.write_bytes(b"a\n" + tail)
        stop, notes = threading.Event(), []
        reader = FileReader(
            path, stop=stop, partial_at_stop=partial_at_stop, interval=0.01, note=notes.append
        )
        threading.Timer(0.3, stop.set).start()  # once the reader waits at the partial line
        assert list(reader.lines()) == expected
        assert [note.split(" and ")[0] for note in notes] == said
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
            '"head_sha256": "", "tail_sha256": ""}',
            "is the position of /elsewhere, not of",
        ),
        (
            '{"file": "x", "device": 1, "inode": 2, "offset": -3, "line": 1, "head_sha256": "", '
            '"tail_sha256": ""}',
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


def run_answered(statuses: list[int], path, position) -> tuple[subprocess.CompletedProcess, int]:
    """`run` against a local server answering `statuses` (`Answers`); the stream's outcome
    and the requests the server saw."""
    answers = Answers(statuses)
    try:
        return run(path, position, answers.url, "k"), answers.seen
    finally:
        answers.close()


def test_a_stream_stopped_by_failures_sends_again_from_the_first_line_not_answered(tmp_path):
    """The server takes the first batch of 10, then fails: the position stays at line 10,
    and the next stream sends lines 11-30 only."""
    path, position = tmp_path / "c.ndjson", tmp_path / "c.position"
    path.write_text(lines(range(30)))
    first, _ = run_answered([202, 500], path, position)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "10 accepted, 0 rejected, 20 not sent" in first.stdout
    assert f"{position} stays after line 10 of the file it was saved for" in first.stderr
    assert json.loads(position.read_text())["line"] == 10
    second, seen = run_answered([202], path, position)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "20 accepted, 0 rejected, 0 not sent" in second.stdout
    assert seen == 2
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
    saving = _Saving(Position(tmp_path / "pos", path), threading.Event())
    counts = Counts(queued=1, sent=1, accepted=1, batches=1)
    saving.settle(counts)  # the answer, in the sender's thread
    for _ in reader.lines():
        saving.position.read(1, reader.mark)  # then the line's end, in the reading thread
    assert saving.finish("", counts) == ""
    assert json.loads((tmp_path / "pos").read_text())["line"] == 1


# The edges a probe of `--position` found, each with the behaviour it expects now.


def test_an_unterminated_last_line_is_sent_and_the_position_stays_before_it(tmp_path):
    """Read once, a last line without its newline may still be being written: it is sent
    (a complete last line loads), and the position does not pass it, so a stream run again
    once the file has grown sends it whole (it used to go on from the middle of it)."""
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\nhal")
    reader = FileReader(path, stop=threading.Event(), follow=False)
    assert read_all(reader) == [b"a\n", b"hal"]
    assert (reader.number, reader.mark.offset, reader.mark.line) == (2, 2, 1)


def test_a_replaced_file_is_read_to_its_end_first(tmp_path, monkeypatch):
    """Lines written to the old file just before it was replaced (between the reader's
    last read and its check), and its unterminated last line, are given before the new
    file's lines; they used to be dropped."""
    import ingest_client.position as position_module

    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\n")
    real = position_module._replaced

    def replaced_after_a_late_write(where, handle, offset, head):
        if path.read_bytes() == b"a\n":  # the old file: written to, then replaced
            with path.open("ab") as old:
                old.write(b"late\nhal")
            (tmp_path / "new").write_bytes(b"x\n")
            os.replace(tmp_path / "new", path)
        return real(where, handle, offset, head)

    monkeypatch.setattr(position_module, "_replaced", replaced_after_a_late_write)
    stop = threading.Event()
    got = []
    for line in FileReader(path, stop=stop, interval=0.01).lines():
        got.append(line)
        if line == b"x\n":
            stop.set()
    assert got == [b"a\n", b"late\n", b"hal", b"x\n"]


@pytest.mark.parametrize("partial", [b"", b'{"half'])
def test_a_file_truncated_and_refilled_between_two_looks_is_read_from_its_start(
    tmp_path, monkeypatch, partial
):
    """copytruncate with a busy writer: the same inode, emptied and written past the old
    offset before the reader looked again. Its first bytes differ: read from its start,
    every new line, and a half line of the old content is said and dropped. The new lines
    before the old offset were lost, and the rest read from the middle of one (a garbled
    line, a wrong line number)."""
    import ingest_client.position as position_module

    path = tmp_path / "c.ndjson"
    old = b"".join(b"old %d\n" % n for n in range(10)) + partial
    new = b"".join(b"new line %d\n" % n for n in range(20))
    path.write_bytes(old)
    real = position_module._replaced

    def refilled_before_the_look(where, handle, offset, head):
        if path.read_bytes() == old:
            with path.open("r+b") as same:  # the same inode, as copytruncate leaves it
                same.truncate(0)
                same.write(new)
        return real(where, handle, offset, head)

    monkeypatch.setattr(position_module, "_replaced", refilled_before_the_look)
    stop, got, notes = threading.Event(), [], []
    for line in FileReader(path, stop=stop, interval=0.01, note=notes.append).lines():
        got.append(line)
        if line == b"new line 19\n":
            stop.set()
    assert got == old.splitlines(keepends=True)[:10] + new.splitlines(keepends=True)
    assert [n.split(":")[0] for n in notes] == (
        ["c.ndjson was rewritten in place"] if partial else []
    )


def test_a_start_inside_a_line_is_not_trusted(tmp_path):
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"abc\ndef\n")
    reader = FileReader(path, stop=threading.Event(), follow=False, start=start_of(path, 2, 1))
    assert read_all(reader) == [b"abc\n", b"def\n"]
    assert not reader.resumed


def test_a_symlink_pointed_at_another_file_is_a_replaced_file(tmp_path):
    """The position names the path as given, not the file a symlink points to: pointed
    elsewhere, it is read from its start (the stream used to refuse to start)."""
    (tmp_path / "one").write_text(lines(range(3)))
    (tmp_path / "two").write_text(lines(range(3, 5)))
    link = tmp_path / "current.ndjson"
    link.symlink_to(tmp_path / "one")
    position = Position(tmp_path / "pos", link)
    reader = FileReader(link, stop=threading.Event(), follow=False)
    for _ in reader.lines():
        position.read(0, reader.mark)
    position.settle(sent=0, failed=0)
    position.save()
    link.unlink()
    link.symlink_to(tmp_path / "two")
    start = Position(tmp_path / "pos", link).load()
    again = FileReader(link, stop=threading.Event(), follow=False, start=start)
    assert len(read_all(again)) == 2
    assert not again.resumed


def test_one_stream_at_a_time_uses_a_position(tmp_path):
    first, second = (
        Position(tmp_path / "pos", tmp_path / "c"),
        Position(tmp_path / "pos", tmp_path / "c"),
    )
    first.lock()
    try:
        with pytest.raises(ValueError, match="another stream is using the position"):
            second.lock()
    finally:
        first.release()
    second.lock()  # free once released
    second.release()


def test_a_position_that_cannot_be_written_is_an_error_at_the_start(tmp_path, capsys):
    data = tmp_path / "c.ndjson"
    data.write_text(lines(range(3)))
    code = stream_command.main(
        ["--type", "customers", str(data), "--position", str(tmp_path / "no" / "pos"),
         "--api-key", "k", "--api-url", "http://127.0.0.1:9", "--no-progress"]
    )  # fmt: skip
    assert code == 2
    assert "No such file or directory" in capsys.readouterr().err


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        stream("--type", "customers", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT,
    )  # fmt: skip


def interrupted_twice(process: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C once the stream has read its file and sent (2 s), again a second later; its
    output."""
    import signal
    import time

    time.sleep(2)
    process.send_signal(signal.SIGINT)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=30)


@contextlib.contextmanager
def streaming(*args: str, server: LocalServer | None = None) -> Iterator[subprocess.Popen]:
    """`spawn(*args)`, killed at the end if it still runs, then `server` closed."""
    process = spawn(*args)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if server is not None:
            server.close()


def test_a_position_that_can_no_longer_be_saved_ends_a_followed_stream(tmp_path):
    """Its folder gone mid-stream: the stream stops on its own, sends what it read and
    exits 2 saying why (it used to follow on, saving nothing, until stopped)."""
    import shutil

    data, folder = tmp_path / "c.ndjson", tmp_path / "positions"
    folder.mkdir()
    data.write_text(lines(range(20)))
    taking = Answers([202])
    with streaming(
        str(data), "--follow", "--position", str(folder / "pos"), "--api-url", taking.url,
        "--api-key", "k", "--batch-records", "10", server=taking,
    ) as process:  # fmt: skip
        wait_for(lambda: (folder / "pos").exists())
        shutil.rmtree(folder)
        with data.open("a") as grown:  # a position to save again
            grown.write(lines(range(20, 30)))
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2, out + err
    assert "cannot save the position in" in err.replace("\n", "")
    assert "30 accepted, 0 rejected, 0 not sent" in out


def test_a_second_ctrl_c_gives_up_and_the_stream_says_what_was_not_sent(tmp_path):
    """Nothing listens at the URL: Ctrl-C stops reading and the stream retries what it
    read; a second Ctrl-C gives those records up at once, and the exit is 2 with what was
    not sent (it waited out every retry, then exited 0)."""
    import time

    from scripts.stack import free_port

    data = tmp_path / "c.ndjson"
    data.write_text(lines(range(5)))
    with streaming(
        str(data), "--follow", "--api-url", f"http://127.0.0.1:{free_port()}", "--api-key", "k",
        "--batch-records", "2", "--retries", "50",
    ) as process:  # fmt: skip
        started = time.monotonic()
        out, err = interrupted_twice(process)
        assert time.monotonic() - started < 13  # 3 s of it before the second Ctrl-C
    assert process.returncode == 2, out + err
    assert "0 accepted, 0 rejected, 5 not sent" in out
    assert "error: 5 records in" in err


@pytest.mark.parametrize(
    ("cut", "accepted", "said"),
    [(None, 3, ""), (30, 2, "c.ndjson: the last 30 bytes read have no newline yet")],
    ids=["a whole record", "half a record"],
)
def test_a_followed_last_line_without_its_newline_at_ctrl_c(tmp_path, cut, accepted, said):
    """Without a position, Ctrl-C sends a last line still waiting for its newline when it
    is a whole record, as the docs say (it was lost: the interrupt left the reader before
    it gave it). Half a record (the writer stopped mid-line) is not sent, and that is
    said; the exit is 0 (it was sent, and its reject made the exit 1)."""
    import signal

    data = tmp_path / "c.ndjson"
    data.write_text(lines(range(2)) + json.dumps(customer_of(2))[:cut])
    taking = Answers([202])
    process = spawn(
        str(data), "--follow", "--api-url", taking.url, "--api-key", "k", "--batch-delay", "60",
    )  # fmt: skip
    try:
        out, err = ended_by(process, data, signal.SIGINT)
    finally:
        taking.close()
    assert process.returncode == 0, out + err
    assert f"{accepted} accepted, 0 rejected, 0 not sent" in out
    assert said in " ".join(err.split())


def test_a_pipe_is_read_as_it_comes(tmp_path):
    """A FIFO (or /dev/stdin) as FILE: read as it comes; with a position, that is said
    (it cannot be sought). It failed: 'File or stream is not seekable'."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    taking = Answers([202])

    def write() -> None:
        with fifo.open("w") as writer:
            writer.write(lines(range(7)))

    try:
        for extra in ((), ("--position", str(tmp_path / "pos"))):
            writer = threading.Thread(target=write)
            writer.start()
            done = subprocess.run(
                stream("--type", "customers", str(fifo), "--api-url", taking.url, "--api-key", "k",
                       *extra),
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
            writer.join()
            assert done.returncode == 0, done.stdout + done.stderr
            assert "7 accepted, 0 rejected, 0 not sent" in done.stdout
        assert "is a pipe" not in done.stderr  # no start saved for a pipe's first read
    finally:
        taking.close()


def test_a_record_too_large_for_any_batch_is_a_reject_not_a_failure():
    """The server answers 413 for one record alone: no split or retry can send it, so it is
    rejected with the server's reason, and the position can pass it (it was a failure that
    held the position at it for good)."""
    from ingest_client.live import Client

    refusing = Answers([413])
    client = Client(refusing.url, "k", flush_at_exit=False)
    try:
        client.send_line("customers", b'{"customer_id": "big"}', source_line=7)
        client.close(timeout=30)
    finally:
        refusing.close()
    assert (client.counts.sent, client.counts.rejected, client.counts.failed) == (1, 1, 0)
    assert client.counts.batches == 0
    [reject] = client.rejects
    assert (reject.code, reject.line, reject.source_line) == ("payload_too_large", 1, 7)
    assert reject.raw == '{"customer_id": "big"}'


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_server_s_413_for_one_record_is_its_reject(live_stack):
    """A record over the batch's byte limit (5 MiB) on the real server: rejected with the
    server's code and reason; the record after it is merged."""
    from ingest_client.live import Client

    tenant, issued = tenant_create(name="live-too-large")
    big = {**customer_of(1), "metadata": {"blob": "x" * (6 << 20)}}
    with Client(live_stack, issued.raw, flush_at_exit=False) as client:
        client.send("customers", big)
        client.send("customers", customer_of(2))
    assert (client.counts.sent, client.counts.rejected, client.counts.failed) == (2, 1, 0)
    [reject] = client.rejects
    assert reject.code == "payload_too_large"
    assert "5242880" in reject.message or "5 MiB" in reject.message, reject.message
    rows = Customer.objects.filter(tenant_id=tenant.id)
    wait_for(lambda: rows.count() == 1)


# The edges a review found.


class Holding(LocalServer):
    """Holds requests unanswered until closed: every GET (a merge check that takes its
    whole timeout), and every POST with `posts`; without, a POST is taken (202, with a
    batch URL to follow)."""

    def __init__(self, *, posts: bool):
        self.closing = closing = threading.Event()

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if posts:
                    closing.wait(60)
                    return
                url = f"http://127.0.0.1:{self.server.server_address[1]}/batches/1/"
                body = json.dumps({"id": 1, "state": "accepted", "url": url}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                closing.wait(60)

        self._serve(Handler)

    def close(self) -> None:
        self.closing.set()
        super().close()


def test_a_second_ctrl_c_during_a_request_says_its_records_were_not_sent(tmp_path):
    """The server holds the request: the second Ctrl-C leaves it under way, and the stream
    says so and exits 2 (its records were in neither `sent` nor `failures`: it exited 0,
    '0 not sent')."""

    data = tmp_path / "c.ndjson"
    data.write_text(lines(range(5)))
    stalling = Holding(posts=True)
    with streaming(
        str(data), "--follow", "--api-url", stalling.url, "--api-key", "k",
        "--batch-records", "5", server=stalling,
    ) as process:  # fmt: skip
        out, err = interrupted_twice(process)
    assert process.returncode == 2, out + err
    assert "0 accepted, 0 rejected, 5 not sent" in out
    assert "5 records given up while being sent" in err.replace("\n", "")


def test_no_mark_is_kept_once_a_batch_has_failed(tmp_path):
    """A follower whose batch failed keeps its position; it kept a mark for every line read
    after it too (about 270 bytes a line, for the rest of the run)."""
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"a\n" * 1000)
    reader = FileReader(path, stop=threading.Event(), follow=False)
    position = Position(tmp_path / "pos", path)
    lines_read = reader.lines()
    next(lines_read)
    position.read(1, reader.mark)
    position.settle(sent=0, failed=1)
    for queued, _ in enumerate(lines_read, 2):
        position.read(queued, reader.mark)
    position.settle(sent=1000, failed=1)
    assert len(position._marks) == 0
    assert position.settled is None


def test_a_file_rewritten_in_place_but_for_its_start_is_read_from_its_start(tmp_path):
    """The same inode, the same first 4 KiB, longer than the position, other lines before
    it (a nightly export rewritten): read from the start, not gone on with (its changed
    lines were skipped)."""
    path = tmp_path / "c.ndjson"
    rows = [b'{"n": %05d}\n' % n for n in range(600)]  # 13 bytes each
    path.write_bytes(b"".join(rows))
    start = start_of(path, 13 * 500, 500)
    with path.open("r+b") as same:  # lines 401-500 changed, one more at the end
        same.truncate(0)
        same.write(b"".join(rows[:400] + [b'{"n": 99999}\n'] * 100 + rows[500:] + rows[:1]))
    reader = FileReader(path, stop=threading.Event(), follow=False, start=start)
    assert len(read_all(reader)) == 601
    assert not reader.resumed


def test_a_record_refused_alone_is_described_without_a_batch():
    from ingest_client.live import Reject
    from ingest_client.stream import _describe

    reject = Reject("customers", 0, 1, "", "payload_too_large", "too large", "", (), 7)
    assert _describe(reject) == "rejected: line 7 (refused alone): payload_too_large (): too large"


def test_the_position_is_saved_while_a_merge_check_hangs(tmp_path):
    """The ticker saves before it checks merges (two GETs of up to 30 s each): a slow
    server's answers to those no longer hold the position back (it was saved after them)."""
    data, position = tmp_path / "c.ndjson", tmp_path / "pos"
    data.write_text(lines(range(10)))
    server = Holding(posts=False)
    with streaming(
        str(data), "--follow", "--position", str(position), "--api-url", server.url,
        "--api-key", "k", "--batch-records", "10", server=server,
    ):  # fmt: skip
        wait_for(position.exists, timeout=10)
        assert json.loads(position.read_text())["line"] == 10
