"""Idempotency-Key for every endpoint that takes one (uploads, sessions, live batches,
webhook endpoints): `idempotent` runs a request once per key.

Per tenant and key, kept `IDEMPOTENCY_TTL_SECONDS` (SPEC section 5): the same key with the
same request replays the stored answer (`Idempotent-Replayed: true`) and processes nothing
again; the same key with a different request is 422; the same key while the first request
is still in flight is 409; a request that fails frees its key. A file upload is
fingerprinted by method, path, the file's sha256 and its parameters, so a retry with a new
multipart boundary still matches.

In flight means its request still runs: the request that claims a key holds a
session-level advisory lock on it (`IN_FLIGHT_LOCK`) from the claim to its answer, taken
and given back in the same statements as the key's row. A web process that dies (a crash,
SIGKILL) closes its connections, and PostgreSQL lets go of their locks: the next request
with the key finds its row unanswered and its lock free, and takes it over at once. A slow
request (a large file's body arriving for an hour) keeps its key however long it takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from apps.core.errors import ApplicationError, ConflictError, UnprocessableError
from apps.core.models import IdempotencyKey

if TYPE_CHECKING:
    from apps.tenants.models import Tenant

_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # an RFC 8941 string's characters; never a NUL
# The advisory lock of a key in flight, of (tenant id, key) given as parameters: a test that
# holds one from another connection takes it with the same expression.
IN_FLIGHT_LOCK = "hashtextextended('idempotency:' || %(tenant)s || ':' || %(key)s, 0)"
# A new key: its row and its lock, in one statement (nothing when the key is taken). Its
# lock is only tried: a lock held with no row is a request that is freeing the key (its
# unlock ran, its delete not yet committed) or one whose row was purged; not this one's.
_CLAIM = f"""
WITH claimed AS (
    INSERT INTO idempotency_keys (tenant_id, key, fingerprint, headers, created_at)
    VALUES (%(tenant)s, %(key)s, '', '{{}}', now())
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING id
)
SELECT id, pg_try_advisory_lock({IN_FLIGHT_LOCK}) FROM claimed
"""
# A taken key, locked for the takeover, with whether it could be taken over (unanswered,
# or answered too long ago). Its advisory lock is tried after, on its own: in the same
# statement, PostgreSQL computes the lock's call before it locks the row, and may find
# the row deleted once it does, with the advisory lock taken and no claim to give it back.
_TAKEN = """
SELECT id, status_code IS NULL OR created_at < %(expired)s
FROM idempotency_keys WHERE tenant_id = %(tenant)s AND key = %(key)s
FOR UPDATE
"""
_TRY_LOCK = f"SELECT pg_try_advisory_lock({IN_FLIGHT_LOCK})"
_UNCLAIM = "DELETE FROM idempotency_keys WHERE id = %(id)s"
_TAKE_OVER = (
    "UPDATE idempotency_keys SET fingerprint = '', status_code = NULL, body = NULL, "
    "headers = '{}', created_at = now() WHERE id = %(id)s"
)
_UNLOCK = f"SELECT pg_advisory_unlock({IN_FLIGHT_LOCK})"
# The answer stored, or the key freed, and its lock given back, in one statement: the
# unlock reads the change's count, so it runs once the change is made. Called beside the
# change instead, it could run first (PostgreSQL runs a statement's parts in no set order)
# while the change waited for a takeover's lock on the row, and the takeover, finding the
# lock free, would run the request a second time.
_FINISH = f"""
WITH done AS (
    UPDATE idempotency_keys
    SET fingerprint = %(fingerprint)s, status_code = %(status)s, body = %(body)s,
        headers = %(headers)s
    WHERE id = %(id)s
    RETURNING 1
)
SELECT pg_advisory_unlock({IN_FLIGHT_LOCK}) FROM (SELECT count(*) FROM done) AS changed
"""
_RELEASE = f"""
WITH freed AS (
    DELETE FROM idempotency_keys WHERE id = %(id)s AND status_code IS NULL RETURNING 1
)
SELECT pg_advisory_unlock({IN_FLIGHT_LOCK}) FROM (SELECT count(*) FROM freed) AS changed
"""


def request_fingerprint(*, method: str, path: str, sha256: str, params: dict) -> str:
    canonical = "\n".join(
        [method.upper(), path, sha256, *(f"{k}={params[k]}" for k in sorted(params))]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """What a request answered: stored under its key, replayed as it was."""

    status_code: int
    body: dict
    headers: dict


def _held(tenant: Tenant, key: str, **more) -> dict:
    return {"tenant": str(tenant.id), "key": key, **more}


def idempotency_begin(*, tenant: Tenant, key: str) -> IdempotencyKey | None:
    """Claim the key for a new request (its row, and its lock held until the answer).
    Returns None when the key is already taken (answered, or its request still in flight)
    or was freed while this looked at it; `idempotency_check` then says what to answer. A
    key whose request is gone (its process died) or whose answer expired is taken over."""
    if not _KEY.fullmatch(key) or not key.strip():
        raise ApplicationError(
            "Idempotency-Key must be 1 to 255 printable ASCII characters.", code="bad_key"
        )
    if "," in key:  # the server joins a header sent twice with one: which key was meant?
        raise ApplicationError(
            "Idempotency-Key must be one key, without a comma (a header sent twice is "
            "joined with one).",
            code="bad_key",
        )
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, _held(tenant, key))
        row = cursor.fetchone()
        if row is not None:
            if row[1]:
                return _claim_row(row[0], tenant, key)
            cursor.execute(_UNCLAIM, {"id": row[0]})  # as if it had been taken: 409 at worst
            return None
        expired = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
        locked = False
        try:
            with transaction.atomic():
                cursor.execute(_TAKEN, _held(tenant, key, expired=expired))
                row = cursor.fetchone()
                if row is None or not row[1]:  # freed meanwhile; answered
                    return None
                cursor.execute(_TRY_LOCK, _held(tenant, key))
                locked = cursor.fetchone()[0]
                if not locked:  # its request still runs
                    return None
                cursor.execute(_TAKE_OVER, {"id": row[0]})
        except BaseException:
            if locked:  # the takeover rolled back (the lock is not transactional): not kept
                cursor.execute(_UNLOCK, _held(tenant, key))
            raise
        return _claim_row(row[0], tenant, key)


def _claim_row(row_id: int, tenant: Tenant, key: str) -> IdempotencyKey:
    claim = IdempotencyKey(id=row_id, tenant=tenant, key=key, fingerprint="")
    claim._state.adding = False
    return claim


class KeyFreedError(Exception):
    """The key has no row: the request that held it failed (or its answer expired and was
    purged) since this request found it taken. It may be claimed again."""


def idempotency_check(*, tenant: Tenant, key: str, fingerprint_of: Callable[[], str]) -> Answer:
    """For a key already taken: the stored response to replay, or the error to answer (409
    while the first request is in flight, before `fingerprint_of()` reads anything; 422
    for another request). Raises `KeyFreedError` when the key is no longer taken."""
    row = IdempotencyKey.objects.filter(tenant=tenant, key=key).first()
    if row is None:
        raise KeyFreedError(key)
    if row.status_code is None:
        raise ConflictError(
            "A request with this Idempotency-Key is still being processed; retry later.",
            code="idempotency_in_flight",
        )
    if row.fingerprint != fingerprint_of():
        raise UnprocessableError(
            "This Idempotency-Key was used for a different request.",
            code="idempotency_mismatch",
        )
    return Answer(status_code=row.status_code, body=row.body, headers=row.headers)


def idempotency_finish(
    *, row: IdempotencyKey, fingerprint: str, status_code: int, body: dict, headers: dict
) -> None:
    """Store the answer under the claimed key, and let go of it."""
    params = _held(
        row.tenant,
        row.key,
        id=row.id,
        fingerprint=fingerprint,
        status=status_code,
        body=Jsonb(body),
        headers=Jsonb(headers),
    )
    with connection.cursor() as cursor:
        cursor.execute(_FINISH, params)


def idempotency_release(*, row: IdempotencyKey) -> None:
    """The request failed before answering: free the key for a retry."""
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE, _held(row.tenant, row.key, id=row.id))


def idempotency_purge() -> int:
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    return IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()[0]


def idempotent(
    *,
    tenant: Tenant,
    key: str | None,
    run: Callable[[], tuple[Answer, str]],
    fingerprint_of: Callable[[], str],
    together: bool = False,
) -> tuple[Answer, bool]:
    """Answer a request once per Idempotency-Key; returns (answer, replayed).

    `run()` does the request's work and returns its answer and the request's fingerprint
    (known once the request is read: a file's sha256 is computed as it is stored). Without
    a key, it just runs. With a new key, its answer is stored under the key; if it raises
    (the request failed, its body was cut short), the key is freed for a retry. With a key
    already used: 409 while that request is in flight; else `fingerprint_of()` says what
    this request is without doing its work, and the stored answer is replayed when it is
    the same request, 422 when it is another.

    With `together`, `run()` and the answer's storing are one transaction: a process that
    dies between its work's commit and its answer's would leave the key unanswered and
    free, and the client's retry would do the work again. For a request whose work is one
    short transaction (a live batch); an upload's is not, and the same bytes sent again
    find the upload they made (SPEC 4) instead."""
    if key is None:
        return run()[0], False
    claim = _claim(tenant=tenant, key=key, fingerprint_of=fingerprint_of)
    if isinstance(claim, Answer):
        return claim, True
    try:
        with transaction.atomic() if together else contextlib.nullcontext():
            answer, fingerprint = run()
            idempotency_finish(
                row=claim,
                fingerprint=fingerprint,
                status_code=answer.status_code,
                body=answer.body,
                headers=answer.headers,
            )
    except BaseException:
        idempotency_release(row=claim)
        raise
    return answer, False


_CLAIMS = 3  # tries at a key that other requests keep claiming and freeing


def _claim(
    *, tenant: Tenant, key: str, fingerprint_of: Callable[[], str]
) -> IdempotencyKey | Answer:
    """The key claimed for this request, or the stored answer to replay (409 while the
    first request is in flight, 422 for another request). A key freed meanwhile (its
    request failed) is claimed again: the request that freed it answered an error, and
    this one is a retry of it or runs at the same time; while clients keep claiming and
    freeing it, 409 as for one in flight."""
    for _ in range(_CLAIMS):
        claim = idempotency_begin(tenant=tenant, key=key)
        if claim is not None:
            return claim
        try:
            return idempotency_check(tenant=tenant, key=key, fingerprint_of=fingerprint_of)
        except KeyFreedError:
            continue
    raise ConflictError(
        "A request with this Idempotency-Key is still being processed; retry later.",
        code="idempotency_in_flight",
    )
