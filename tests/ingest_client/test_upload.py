"""Sending a file through resumable sessions, against an in-memory stand-in that follows the
sessions contract (create, PATCH chunks at offsets, 409 with the offset, 410, 422, status,
resume), so the paths a real server rarely shows on cue are exercised: a lost answer, an
expired session, a stale saved offset. The real server is tested in test_bulk_runs."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import threading

import httpx
import pytest
from rich.console import Console

from ingest_client.plan import FileJob, Tenant
from ingest_client.report import Reporter
from ingest_client.runner import Options, Runner
from ingest_client.state import StateFile
from ingest_client.transport import RetryPolicy
from ingest_client.upload import offset_of


class SessionServer:
    """Just enough of the sessions API: byte offsets, states and the final upload."""

    def __init__(self):
        self.sessions: dict[str, dict] = {}
        self.uploads: dict[str, dict] = {}
        self.keys: dict[str, str] = {}
        self.patches: list[int] = []  # offsets of the chunks received
        self.drop_answer_at_offset: int | None = None  # apply the chunk, then lose the answer
        self.expire_once: bool = False
        self.on_patch = lambda offset: None  # called as each chunk arrives
        self._ids = itertools.count(1)

    def session_body(self, token: str) -> dict:
        s = self.sessions[token]
        return {
            "token": token,
            "filename": s["filename"],
            "size": s["size"],
            "offset": len(s["data"]),
            "state": s["state"],
            "upload_id": s["upload_id"],
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/ingest/sessions/":
            key = request.headers.get("Idempotency-Key")
            if key in self.keys:
                token = self.keys[key]
                return httpx.Response(
                    201, json=self.session_body(token), headers={"Idempotent-Replayed": "true"}
                )
            body = json.loads(request.content)
            token = f"tok{next(self._ids)}"
            self.keys[key] = token
            self.sessions[token] = {
                "filename": body["filename"],
                "size": body["size"],
                "sha256": body["sha256"],
                "data": bytearray(),
                "state": "open",
                "upload_id": None,
            }
            return httpx.Response(201, json=self.session_body(token))
        match = re.fullmatch(r"/api/v1/ingest/sessions/([^/]+)/(status/|resume/)?", path)
        if match:
            token, action = match.groups()
            if token not in self.sessions:
                return httpx.Response(404, json={"detail": "no such session"})
            s = self.sessions[token]
            if s["state"] == "expired":
                return httpx.Response(410, json={"detail": "expired"})
            if action:
                return httpx.Response(200, json=self.session_body(token))
            return self.patch(request, token, s)
        match = re.fullmatch(r"/api/v1/ingest/uploads/([^/]+)/", path)
        if match and match.group(1) in self.uploads:
            return httpx.Response(200, json=self.uploads[match.group(1)])
        return httpx.Response(404, json={"detail": f"nothing at {path}"})

    def patch(self, request: httpx.Request, token: str, s: dict) -> httpx.Response:
        offset = int(request.headers["Upload-Offset"])
        if self.expire_once:
            self.expire_once = False
            s["state"] = "expired"
            return httpx.Response(410, json={"detail": "expired"})
        if offset != len(s["data"]):
            return httpx.Response(
                409,
                json={"detail": "wrong offset", "offset": len(s["data"])},
                headers={"Upload-Offset": str(len(s["data"]))},
            )
        self.patches.append(offset)
        self.on_patch(offset)
        s["data"] += request.content
        done = len(s["data"])
        if done == s["size"]:
            if hashlib.sha256(s["data"]).hexdigest() != s["sha256"]:
                s["state"] = "failed"
                return httpx.Response(422, json={"detail": "checksum mismatch"})
            upload_id = f"up{next(self._ids)}"
            s["state"], s["upload_id"] = "complete", upload_id
            self.uploads[upload_id] = {
                "id": upload_id,
                "state": "completed",
                "sha256": s["sha256"],
                "rows": {"total": 1, "inserted": 1, "rejected": 0, "pending": 0},
                "progress": {"rows_per_second": 1.0},
            }
            answer = httpx.Response(
                202, json=self.uploads[upload_id], headers={"Upload-Offset": str(done)}
            )
        else:
            answer = httpx.Response(
                200, json=self.session_body(token), headers={"Upload-Offset": str(done)}
            )
        if self.drop_answer_at_offset == offset:
            self.drop_answer_at_offset = None
            raise httpx.ReadError("connection dropped", request=request)
        return answer


@pytest.fixture
def server():
    return SessionServer()


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "t1" / "customers_1.ndjson"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes: 10 chunks of 1,024
    return FileJob(Tenant("tid", "t1", "key", path.parent), path, "customers", 10_240, 0, True)


def _runner(server, tmp_path, **options) -> tuple[Runner, StateFile, io.StringIO]:
    out = io.StringIO()
    state = StateFile(tmp_path / "state.json")
    runner = Runner(
        client=httpx.Client(transport=httpx.MockTransport(server), base_url="http://api"),
        policy=RetryPolicy(attempts=3, base=0.01, cap=0.01),
        state=state,
        reporter=Reporter(Console(file=out), enabled=False),
        options=Options(chunk_size=1024, session_threshold=1024, **options),
        stop=threading.Event(),
    )
    return runner, state, out


def _only(state: StateFile) -> dict:
    (entry,) = json.loads(state.path.read_text())["files"].values()
    return entry


def test_a_large_file_is_sent_in_chunks_at_increasing_offsets(server, job, tmp_path):
    """Ten chunks in order; the last answer is the upload, recorded in the state file."""
    runner, state, _ = _runner(server, tmp_path)
    result = runner.send(job)
    assert result.error is None
    assert server.patches == list(range(0, 10_240, 1024))
    assert result.upload["state"] == "completed"
    assert _only(state) | {"path": None} == {
        "path": None,
        "size": 10_240,
        "token": "tok1",
        "attempt": 0,
        "offset": 10_240,
        "upload_id": result.upload["id"],
    }


def test_an_interrupted_run_continues_from_the_servers_offset(server, job, tmp_path):
    """Stopped after three chunks; the next run resumes the saved session at 3,072."""
    runner, state, _ = _runner(server, tmp_path, stop_after_chunks=3)
    assert runner.send(job).error == "interrupted"
    assert _only(state)["offset"] == 3072
    runner, state, out = _runner(server, tmp_path)
    result = runner.send(job)
    assert result.error is None
    assert server.patches == list(range(0, 10_240, 1024))  # nothing sent twice
    assert list(server.sessions) == ["tok1"]
    assert "resuming session at byte 3,072 of 10,240" in out.getvalue()


def test_a_stale_saved_offset_is_corrected_by_the_servers_409(server, job, tmp_path):
    """The state file lags behind the server (a crash after the chunk went through): the
    409's offset is where sending continues."""
    runner, state, _ = _runner(server, tmp_path, stop_after_chunks=4)
    runner.send(job)
    server.sessions["tok1"]["data"] += job.path.read_bytes()[4096:5120]  # arrived, unrecorded
    runner, _, _ = _runner(server, tmp_path)  # the resume answer is the truth
    assert runner.send(job).error is None
    assert server.patches == [0, 1024, 2048, 3072, *range(5120, 10_240, 1024)]


def test_a_lost_answer_to_the_last_chunk_still_finds_the_upload(server, job, tmp_path):
    """The connection drops after the server took the last byte: the retry's 409 at the
    full size leads to the session's upload, not to a second copy."""
    server.drop_answer_at_offset = 9216
    runner, _, out = _runner(server, tmp_path)
    result = runner.send(job)
    assert result.error is None
    assert result.upload["id"] == server.sessions["tok1"]["upload_id"]
    assert len(server.uploads) == 1
    assert "ReadError: connection dropped; retrying" in out.getvalue()


def test_an_expired_session_is_replaced_by_a_new_one(server, job, tmp_path):
    """410: a new session (with a new Idempotency-Key) takes the whole file again."""
    runner, state, _ = _runner(server, tmp_path, stop_after_chunks=2)
    runner.send(job)
    server.expire_once = True
    runner, state, _ = _runner(server, tmp_path)
    result = runner.send(job)
    assert result.error is None
    assert list(server.sessions) == ["tok1", "tok2"]
    assert server.sessions["tok2"]["upload_id"] == result.upload["id"]
    assert _only(state)["token"] == "tok2"
    assert len(server.keys) == 2


def test_a_checksum_mismatch_fails_the_file_with_a_clear_message(server, job, tmp_path):
    """422 on the last byte (the file changed while it was sent): the file fails."""
    original = job.path.read_bytes()

    def change_the_file(offset: int) -> None:
        if offset == 7168:  # before the client reads the last block
            job.path.write_bytes(original[:-1] + b"!")  # same size, other bytes

    server.on_patch = change_the_file
    runner, _, _ = _runner(server, tmp_path)
    result = runner.send(job)
    assert result.upload is None
    assert "sha256 of the received bytes does not match" in result.error
    assert server.sessions["tok1"]["state"] == "failed"


def test_a_rerun_after_completion_sends_nothing(server, job, tmp_path):
    """The state file's upload id answers the rerun: no session, no chunk."""
    runner, _, _ = _runner(server, tmp_path)
    first = runner.send(job).upload
    runner, _, _ = _runner(server, tmp_path)
    result = runner.send(job)
    assert (result.upload, result.fresh) == (first, False)
    assert len(server.patches) == 10
    assert list(server.sessions) == ["tok1"]


def test_the_servers_offset_comes_from_the_header_or_the_body():
    """A 409 says where to continue: Upload-Offset, else `offset` in the problem body."""
    assert offset_of(httpx.Response(409, headers={"Upload-Offset": "42"}, json={})) == 42
    assert offset_of(httpx.Response(409, json={"offset": 7})) == 7
    assert offset_of(httpx.Response(409, json={})) is None
