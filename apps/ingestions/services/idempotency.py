"""Idempotency-Key for every endpoint that takes one: `idempotent` runs a request once per key.

Per tenant and key, kept `IDEMPOTENCY_TTL_SECONDS` (SPEC section 5): the same key with the
same request replays the stored answer (`Idempotent-Replayed: true`) and processes nothing
again; the same key with a different request is 422; the same key while the first request
is still in flight is 409; a request that fails frees its key. A file upload is
fingerprinted by method, path, the file's sha256 and its parameters, so a retry with a new
multipart boundary still matches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError, ConflictError, UnprocessableError
from apps.ingestions.models import IdempotencyKey
from apps.tenants.models import Tenant

IN_FLIGHT_ABANDONED_AFTER = timedelta(minutes=15)  # a crashed request frees its key
_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # an RFC 8941 string's characters; never a NUL


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


def _expired(row: IdempotencyKey) -> bool:
    return row.created_at < timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)


def idempotency_begin(*, tenant: Tenant, key: str) -> IdempotencyKey | None:
    """Claim the key for a new request. Returns None when the key is already taken (done
    or in flight) or was freed while this looked at it; `idempotency_check` then says what
    to answer."""
    if not _KEY.fullmatch(key) or not key.strip():
        raise ApplicationError(
            "Idempotency-Key must be 1 to 255 printable ASCII characters.", code="bad_key"
        )
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(tenant=tenant, key=key, fingerprint="")
    except IntegrityError:
        pass
    with transaction.atomic():
        # none when the request that held it failed and freed it since the insert above
        row = IdempotencyKey.objects.select_for_update().filter(tenant=tenant, key=key).first()
        if row is None:
            return None
        stale = (
            row.status_code is None and row.created_at < timezone.now() - IN_FLIGHT_ABANDONED_AFTER
        )
        if _expired(row) or stale:
            row.fingerprint, row.status_code, row.body, row.headers = "", None, None, {}
            row.created_at = timezone.now()
            row.save()
            return row
    return None


class KeyFreedError(Exception):
    """The key has no row: the request that held it failed (or its answer expired and was
    purged) since this request found it taken. It may be claimed again."""


def idempotency_check(*, tenant: Tenant, key: str, fingerprint: str | None) -> Answer | None:
    """For a key already taken: the stored response to replay, or the error to answer.
    With no fingerprint, only raise when the first request is still in flight. Raises
    `KeyFreedError` when the key is no longer taken."""
    row = IdempotencyKey.objects.filter(tenant=tenant, key=key).first()
    if row is None:
        raise KeyFreedError(key)
    if row.status_code is None:
        raise ConflictError(
            "A request with this Idempotency-Key is still being processed; retry later.",
            code="idempotency_in_flight",
        )
    if fingerprint is None:
        return None
    if row.fingerprint != fingerprint:
        raise UnprocessableError(
            "This Idempotency-Key was used for a different request.",
            code="idempotency_mismatch",
        )
    return Answer(status_code=row.status_code, body=row.body, headers=row.headers)


def idempotency_finish(
    *, row: IdempotencyKey, fingerprint: str, status_code: int, body: dict, headers: dict
) -> None:
    IdempotencyKey.objects.filter(id=row.id).update(
        fingerprint=fingerprint, status_code=status_code, body=body, headers=headers
    )


def idempotency_release(*, row: IdempotencyKey) -> None:
    """The request failed before answering: free the key for a retry."""
    IdempotencyKey.objects.filter(id=row.id, status_code=None).delete()


def idempotency_purge() -> int:
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    return IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()[0]


def idempotent(
    *,
    tenant: Tenant,
    key: str | None,
    run: Callable[[], tuple[Answer, str]],
    fingerprint_of: Callable[[], str],
) -> tuple[Answer, bool]:
    """Answer a request once per Idempotency-Key; returns (answer, replayed).

    `run()` does the request's work and returns its answer and the request's fingerprint
    (known once the request is read: a file's sha256 is computed as it is stored). Without
    a key, it just runs. With a new key, its answer is stored under the key; if it raises
    (the request failed, its body was cut short), the key is freed for a retry. With a key
    already used: 409 while that request is in flight; else `fingerprint_of()` says what
    this request is without doing its work, and the stored answer is replayed when it is
    the same request, 422 when it is another."""
    if key is None:
        return run()[0], False
    claim = _claim(tenant=tenant, key=key, fingerprint_of=fingerprint_of)
    if isinstance(claim, Answer):
        return claim, True
    try:
        answer, fingerprint = run()
    except BaseException:
        idempotency_release(row=claim)
        raise
    idempotency_finish(
        row=claim,
        fingerprint=fingerprint,
        status_code=answer.status_code,
        body=answer.body,
        headers=answer.headers,
    )
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
            idempotency_check(tenant=tenant, key=key, fingerprint=None)  # 409 while in flight
            return idempotency_check(tenant=tenant, key=key, fingerprint=fingerprint_of())
        except KeyFreedError:
            continue
    raise ConflictError(
        "A request with this Idempotency-Key is still being processed; retry later.",
        code="idempotency_in_flight",
    )
