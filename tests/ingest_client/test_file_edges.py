"""The bulk CLI's sender when the file is not what was planned: one that cannot be read, and
one that grows or shrinks while it is being sent, is that file's failure with a clear
message (exit 2 for the run), never a traceback that ends the whole run (exit 1, the
code of rows rejected). Sent to a real HTTP server on loopback, through httpx and h11 as
the CLI sends."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from rich.console import Console

from ingest_client.plan import ConfigError, FileJob, Tenant, load_tenants
from ingest_client.report import Reporter
from ingest_client.runner import Options, Runner
from ingest_client.state import MiB, StateFile
from ingest_client.transport import RetryPolicy

SIZE = 3 * MiB


class _Receiver(BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.paths.append(self.path)
        length = int(self.headers["Content-Length"])
        got = 0
        while got < length and (chunk := self.rfile.read(min(65536, length - got))):
            got += len(chunk)
        body = json.dumps(
            {"id": "u1", "state": "completed", "sha256": "", "rows": {"total": 1}}
        ).encode()
        self.send_response(202)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _Changing(Reporter):
    """A reporter that changes the file as its first MiB is sent."""

    def __init__(self, change):
        super().__init__(Console(file=io.StringIO()), enabled=False)
        self.change, self.done = change, False

    def sending(self, job, sent, *, phase="sending"):
        if sent and not self.done:
            self.done = True
            self.change(job.path)


def _send(server: str, tmp_path, path, reporter: Reporter):
    job = FileJob(Tenant("tid", "t1", "key", path.parent), path, "customers", SIZE, 0, False)
    runner = Runner(
        client=httpx.Client(base_url=server, timeout=10),
        policy=RetryPolicy(attempts=2, base=0.01, cap=0.01),
        state=StateFile(tmp_path / "state.json"),
        reporter=reporter,
        options=Options(),
        stop=threading.Event(),
    )
    return runner.send(job)


def _grow(path) -> None:
    with path.open("ab") as fh:
        fh.write(b"\n")


def _shrink(path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(SIZE // 2)


@pytest.mark.parametrize(
    ("change", "how"),
    [(_grow, "grew"), (_shrink, f"shrank to {SIZE // 2:,} bytes")],
    ids=["grew", "shrank"],
)
def test_a_file_that_changes_while_it_is_sent_is_that_files_failure(server, tmp_path, change, how):
    """Its Content-Length is the planned size: more bytes raised h11's 'Too much data',
    fewer 'Too little data', out of the run as a traceback."""
    path = tmp_path / "customers_1.ndjson"
    path.write_bytes(b"x" * (SIZE - 1) + b"\n")
    result = _send(server, tmp_path, path, _Changing(change))
    assert result.upload is None
    assert result.error == (
        f"the file {how} while it was being sent (it had {SIZE:,} bytes when the run began): "
        "send it again once it is complete"
    )


def test_a_file_that_cannot_be_read_is_that_files_failure(server, tmp_path):
    """A directory where the file was planned (or a file the user may not read): the
    reason, for that file (a PermissionError ended the run)."""
    path = tmp_path / "customers_1.ndjson"
    path.mkdir()
    result = _send(server, tmp_path, path, _Changing(lambda path: None))
    assert result.error == f"cannot read {path}: Is a directory"


@pytest.mark.parametrize(
    ("key", "shown", "position"),
    [("ck_\u00fc", "'\u00fc'", 4), ("ck_bad\nkey", "'\\n'", 7), ("ck key", "' '", 3)],
)
def test_an_api_key_that_cannot_be_sent_is_refused_before_any_request(
    tmp_path, key, shown, position
):
    """A key with a non-ASCII character, a line break or a space cannot be a header: said
    at once (it crashed the run, or was retried for a minute as a network failure)."""
    with pytest.raises(ConfigError) as refused:
        load_tenants(tmp_path, api_key=key)
    assert str(refused.value) == (
        f"the API key holds {shown} at character {position}: an API key is printable ASCII "
        "without spaces (was it pasted whole?)"
    )


def test_a_files_name_with_a_line_break_is_sent_with_a_question_mark(server, tmp_path):
    """The filename is a label the server refuses control characters in: such a file could
    never be sent (400 on every run)."""
    path = tmp_path / "customers_1\nx.ndjson"
    path.write_bytes(b"x" * (SIZE - 1) + b"\n")
    _Receiver.paths.clear()
    result = _send(server, tmp_path, path, _Changing(lambda path: None))
    assert result.error is None
    [sent] = _Receiver.paths
    assert "filename=customers_1%3Fx.ndjson" in sent
