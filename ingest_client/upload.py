"""Sending one file: in one request, or in chunks through a resumable upload session.

A file an earlier run already sent is recognised (by the state file, else by its
Idempotency-Key) and not sent again; an open session is continued at the server's offset; an
expired or unknown one is replaced by a new session; an upload whose processing failed
(a worker lost, a limit since raised) is run again from the bytes the server stored.

With `dry_run`, each file is sent as a dry run (`dry_run=true`: processed, reported, rolled
back) under Idempotency-Keys of this run only (`run_tag`): a dry run reports on the data as
it is when it runs, so an earlier run's answer is never replayed for it, nor its own for a
real upload.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from ingest_client.plan import FileJob
from ingest_client.report import TERMINAL, Reporter
from ingest_client.state import (
    MiB,
    StateFile,
    file_sha256,
    idempotency_key,
    state_key,
)
from ingest_client.transport import API, RequestFailed, Transport, client_error, problem_of


class FileFailed(RequestFailed):
    """This file cannot be sent or processed; the message says why."""


def sent_name(job: FileJob) -> str:
    """The file's name as the upload records it: control characters (a line break in a
    name), which the server refuses in a filename, as `?`. Only a label: the record type
    was decided from the real name."""
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in job.path.name)


def _changed(job: FileJob, how: str) -> FileFailed:
    """A file that is not what was planned: its Content-Length (and sha256) are the size
    and bytes it had then. Sent as it is now, the request would not match them."""
    return FileFailed(
        f"the file {how} while it was being sent (it had {job.size:,} bytes when the run "
        "began): send it again once it is complete"
    )


class SessionGone(Exception):
    """The session is unknown (404) or expired (410): start a new one."""


def offset_of(response: httpx.Response) -> int | None:
    """The server's offset: the Upload-Offset header, else `offset` in the body."""
    header = response.headers.get("Upload-Offset", "").strip()
    if header.isdigit():
        return int(header)
    value = problem_of(response).get("offset")
    return int(value) if isinstance(value, int) else None


class FileSender:
    """Sends files through `transport`, recording in `state` what a later run resumes;
    `on_chunk` is called after each session chunk the server took."""

    def __init__(
        self,
        *,
        transport: Transport,
        state: StateFile,
        reporter: Reporter,
        chunk_size: int = 4 * MiB,
        on_chunk: Callable[[], None] = lambda: None,
        dry_run: bool = False,
        run_tag: str = "",
    ):
        self.transport = transport
        self.state = state
        self.reporter = reporter
        self.chunk_size = chunk_size
        self.on_chunk = on_chunk
        self.dry_run = dry_run
        self.run_tag = run_tag

    def _key(self, job: FileJob, sha256: str, route: str) -> str:
        """The Idempotency-Key of the file's request on `route`; a dry run's are this
        run's own."""
        if self.dry_run:
            route = f"dry-run-{self.run_tag}-{route}"
        return idempotency_key(
            tenant_id=job.tenant.tenant_id, record_type=job.record_type, sha256=sha256, route=route
        )

    def send(self, job: FileJob) -> dict:
        """Send one file (or find it already sent); its upload resource, as fresh as can be.
        Raises RequestFailed (FileFailed, KeyRefused) or Interrupted."""
        sha256 = file_sha256(job.path)
        key = state_key(
            tenant=job.tenant.tenant_id or job.tenant.name,
            record_type=job.record_type,
            sha256=sha256,
        )
        upload = self._known_upload(job, key, sha256)
        if upload is not None and upload["state"] == "failed":
            upload = self._rerun_failed(job, key, upload)
        if upload is None:
            if job.via_session:
                upload = self.send_session(job, key, sha256)
            else:
                upload = self.send_whole(job, key, sha256)
        if upload["state"] not in TERMINAL:  # a replayed answer is stale: ask again
            upload = self.get_upload(job, upload["id"]) or upload
        return upload

    def get_upload(self, job: FileJob, upload_id: str) -> dict | None:
        """The upload as the server sees it now; None when it is not found."""
        response = self._request(job, "GET", f"{API}/uploads/{upload_id}/")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise client_error(response, "reading the upload's status")
        return response.json()

    def _request(self, job: FileJob, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.transport.request(
            method, url, api_key=job.tenant.api_key, label=job.label, **kwargs
        )

    def _post_idempotent(
        self, job: FileJob, url: str, *, key: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        return self.transport.post_idempotent(
            url,
            key=key,
            name=job.path.name,
            headers=headers,
            api_key=job.tenant.api_key,
            label=job.label,
            **kwargs,
        )

    def _known_upload(self, job: FileJob, key: str, sha256: str) -> dict | None:
        """The upload an earlier run made of this very file, if the server still has it."""
        saved = self.state.get(key)
        if saved.get("upload_id"):
            upload = self.get_upload(job, saved["upload_id"])
            if upload is not None and upload.get("sha256") in (None, "", sha256):
                return upload
        return None

    def _rerun_failed(self, job: FileJob, key: str, upload: dict) -> dict:
        """An earlier run's upload failed in processing (a worker lost, a limit since
        raised): resuming its session runs it again from the stored bytes. Not a strict
        upload's bad rows, which the same bytes would fail again."""
        code = (upload.get("error") or {}).get("code")
        token = self.state.get(key).get("token")
        if not token or code == "strict_rejected":
            return upload
        response = self._request(job, "POST", f"{API}/sessions/{token}/resume/")
        if response.status_code != 202:
            return upload
        self.reporter.note(
            f"{job.label}: its processing failed last time ({code}); running it again"
        )
        return self.get_upload(job, upload["id"]) or upload

    # -- one request for the whole file

    def send_whole(self, job: FileJob, key: str, sha256: str) -> dict:
        def body() -> Iterator[bytes]:
            sent = 0
            self.reporter.sending(job, 0)
            with job.path.open("rb") as fh:
                while chunk := fh.read(min(MiB, job.size - sent) or 1):
                    if sent + len(chunk) > job.size:
                        raise _changed(job, "grew")
                    sent += len(chunk)
                    self.reporter.sending(job, sent)
                    yield chunk
            if sent < job.size:
                raise _changed(job, f"shrank to {sent:,} bytes")

        params = {"filename": sent_name(job)}
        if job.record_type:
            params["type"] = job.record_type
        if self.dry_run:
            params["dry_run"] = "true"
        compressed = job.path.name.lower().endswith((".gz", ".zst"))
        response = self._post_idempotent(
            job,
            f"{API}/comprehensive/",
            key=self._key(job, sha256, "upload"),
            body=body,
            params=params,
            headers={
                # a generator body is sent chunked unless its length is given
                "Content-Length": str(job.size),
                "Content-Type": (
                    "application/octet-stream" if compressed else "application/x-ndjson"
                ),
            },
        )
        if response.status_code not in (200, 202):
            raise client_error(response, "uploading")
        upload = response.json()
        self.state.update(key, path=str(job.path), size=job.size, upload_id=upload["id"])
        return upload

    # -- resumable sessions

    def send_session(self, job: FileJob, key: str, sha256: str) -> dict:
        """Send the file in chunks through a session, continuing a saved one if it is
        still open; a new session replaces one that expired, failed or is unknown."""
        saved = self.state.get(key)
        attempt = int(saved.get("attempt", 0))  # replacement sessions get their own key
        session = None
        if saved.get("token"):
            session = self._session_continue(job, saved["token"])
            if session is None or session["state"] in ("failed", "expired"):
                attempt, session = attempt + 1, None
            elif session["state"] == "open" and session["offset"]:
                self.reporter.note(
                    f"{job.label}: resuming session at byte {session['offset']:,} of {job.size:,}"
                )
        for _ in range(3):
            if session is None:
                session = self._session_create(job, sha256, attempt)
                if session is None:  # the key's session is gone: a fresh key
                    attempt += 1
                    continue
                self.state.update(
                    key, path=str(job.path), size=job.size, token=session["token"], attempt=attempt
                )
            if session["state"] == "complete":
                return self._session_upload(job, key, session)
            if session["state"] in ("failed", "expired"):
                attempt, session = attempt + 1, None
                continue
            try:
                upload = self._send_chunks(job, key, session)
            except SessionGone:
                attempt, session = attempt + 1, None
                continue
            self.state.update(key, upload_id=upload["id"], offset=job.size)
            return upload
        raise FileFailed("upload sessions kept expiring or failing; giving up")

    def _session_continue(self, job: FileJob, token: str) -> dict | None:
        """The saved session as the server sees it now; an open one is resumed."""
        response = self._request(job, "GET", f"{API}/sessions/{token}/status/")
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise client_error(response, "reading the session's status")
        session = response.json()
        if session["state"] != "open":
            return session
        response = self._request(job, "POST", f"{API}/sessions/{token}/resume/")
        if response.status_code in (404, 410):
            return None
        if response.status_code not in (200, 202):
            raise client_error(response, "resuming the session")
        return response.json()

    def _session_create(self, job: FileJob, sha256: str, attempt: int) -> dict | None:
        payload: dict[str, Any] = {"filename": sent_name(job), "size": job.size, "sha256": sha256}
        if job.record_type:
            payload["type"] = job.record_type
        if self.dry_run:
            payload["dry_run"] = True
        route = "session" if attempt == 0 else f"session-{attempt}"
        response = self._post_idempotent(
            job,
            f"{API}/sessions/",
            key=self._key(job, sha256, route),
            headers={},
            json=payload,
        )
        if response.status_code not in (200, 201):
            raise client_error(response, "creating an upload session")
        session = response.json()
        if response.headers.get("Idempotent-Replayed") == "true":
            # a replay shows the session as it was created: ask where it is now
            return self._session_continue(job, session["token"])
        return session

    def _session_upload(self, job: FileJob, key: str, session: dict) -> dict:
        if not session.get("upload_id"):
            raise FileFailed(f"session {session['token']} is complete but has no upload")
        self.state.update(key, upload_id=session["upload_id"], offset=job.size)
        upload = self.get_upload(job, session["upload_id"])
        if upload is None:
            raise FileFailed(f"the session's upload {session['upload_id']} is not found")
        return upload

    def _send_chunks(self, job: FileJob, key: str, session: dict) -> dict:
        """PATCH chunks from the session's offset until the server answers with the
        upload; a 409 moves to the offset the server has."""
        token = session["token"]
        offset = int(session["offset"])
        stalled = 0
        with job.path.open("rb") as fh:
            while True:
                self.reporter.sending(job, offset)
                fh.seek(offset)
                data = fh.read(self.chunk_size)
                response = self._request(
                    job,
                    "PATCH",
                    f"{API}/sessions/{token}/",
                    body=lambda data=data: data,
                    headers={
                        "Upload-Token": token,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                )
                outcome = self._chunk_outcome(job, key, token, offset, response)
                if isinstance(outcome, dict):
                    return outcome  # the upload
                conflict = response.status_code == 409
                stalled = stalled + 1 if outcome <= offset or conflict else 0
                if stalled > 5:
                    raise FileFailed(f"the server does not take bytes at offset {offset:,}")
                offset = outcome
                self.state.update(key, offset=offset)
                if not conflict:
                    self.on_chunk()

    def _chunk_outcome(
        self, job: FileJob, key: str, token: str, offset: int, response: httpx.Response
    ) -> dict | int:
        """What the answer to the chunk at `offset` means: the upload (the file is all
        there) or the offset to send from next; raises when the session cannot go on."""
        status = response.status_code
        if status in (404, 410):
            raise SessionGone
        if status == 422:
            raise FileFailed(
                "the server's sha256 of the received bytes does not match the file's "
                f"(changed while it was sent?): {problem_of(response).get('detail', '')}"
            )
        if status not in (200, 202, 409):
            raise client_error(response, f"sending bytes {offset:,}+")
        if status == 409 and problem_of(response).get("code") == "session_failed":
            detail = problem_of(response).get("detail", "")
            raise FileFailed(f"the upload session failed: {detail}")
        body = response.json()
        if status in (200, 202) and "rows" in body:
            self.reporter.sending(job, job.size, phase="sent")
            return body  # the chunk that completed the file: the upload
        if body.get("state") == "complete" and body.get("upload_id"):
            return self._session_upload(job, key, body)
        new_offset = offset_of(response)
        if new_offset is None:
            raise FileFailed(f"the server gave no Upload-Offset (HTTP {status})")
        if status == 409 and new_offset >= job.size:
            # every byte is there already (an answer lost on the way): ask for the result
            current = self._session_continue(job, token)
            if current is None:
                raise SessionGone
            if current["state"] == "complete":
                return self._session_upload(job, key, current)
        return new_offset
