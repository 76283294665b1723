"""When an upload may run: the tenant's dependency order (wait, wake, give way), and workers.

One rule decides it (`parents_unfinished`): an upload waits while the tenant has an
unfinished upload of a type from an earlier stage of the dependency order, received before
it or sent with it. A queued upload that the rule holds back waits (`upload_admit`); a
waiting one is queued again once nothing holds it back (`upload_wake`); a running one that
would hold rows for parents whose upload has arrived since it started gives way
(`ParentsArriving`, `upload_give_way`). The states and what moves an upload between them:
docs/engine.md#scheduling.

Only real uploads hold others back: a dry run brings no parents (its load is rolled back),
so nothing waits for it or gives way to it. A dry run itself waits and gives way like a
real upload, so that it reports what a real run would find.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

from celery import current_app
from django.db import connection, transaction
from django.utils import timezone

from apps.core.logs import log_bind
from apps.ingestions import engine
from apps.ingestions.models import Upload, UploadState
from apps.ingestions.selectors import SESSION_RECEIVING_SQL

# Every module that changes an upload's state logs on this one logger (docs/operations.md).
logger = logging.getLogger("apps.ingestions.services")

# Sent by name: services never import tasks (tasks import services).
UPLOAD_PROCESS_TASK = "apps.ingestions.tasks.upload_process_task"


def _earlier_stages(record_type: str) -> tuple[str, ...]:
    """The types of the dependency order's stages before the one of `record_type`."""
    earlier: list[str] = []
    for stage in engine.RECORD_STAGES:
        if record_type in stage:
            return tuple(earlier)
        earlier.extend(stage)
    raise KeyError(record_type)


# A type waits for the tenant's unfinished uploads of every type of an earlier stage (SPEC
# 4: customers and products first, then orders, then order items), not only its parents'.
_BLOCKED_BY = {name: _earlier_stages(name) for name in engine.RECORD_ORDER}
_ACTIVE = (UploadState.RECEIVED, UploadState.QUEUED, UploadState.WAITING, UploadState.PROCESSING)
# Uploads received at most this long after an upload count as sent with it: it waits for
# those of the types it depends on (and gives way to them), not for ones sent later, so a
# tenant that keeps sending parent files can never starve it.
_SENT_TOGETHER_SECONDS = 300
# Nor an upload loading an open session's bytes as they arrive: a session's sender may
# pause for as long as the session lasts (without it, the session would be no upload yet).
_BLOCKED = (
    "SELECT EXISTS (SELECT 1 FROM uploads u WHERE tenant_id = %s "
    "AND record_type = ANY(%s) AND state = ANY(%s) AND created_at <= %s "
    f"AND id <> %s AND source = 'file' AND NOT dry_run AND NOT {SESSION_RECEIVING_SQL})"
)


def upload_enqueue(*, upload_id) -> bool:
    """Hand the upload to a worker. With the broker down it stays queued, and the periodic
    re-queue job sends it once the broker is back."""
    try:
        current_app.send_task(UPLOAD_PROCESS_TASK, args=(str(upload_id),))
    except Exception:  # kombu raises several kinds when the broker is unreachable
        logger.warning("broker unreachable: upload %s stays queued", upload_id, exc_info=True)
        return False
    return True


def upload_try_lock(upload_id) -> bool:
    """Only one process runs an upload at a time: a transaction-scoped advisory lock (not a
    row lock, so progress can still be written to the row from another connection)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('upload:' || %s::text, 0))",
            (str(upload_id),),
        )
        return cursor.fetchone()[0]


def upload_lock_holder(upload_id) -> int | None:
    """The server process id of the session holding the upload's lock (`upload_try_lock`):
    the worker running it; None when no live process does."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.pid FROM pg_locks l, "
            "(SELECT hashtextextended('upload:' || %s::text, 0) AS k) key "
            "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted "
            "AND l.classid = ((key.k >> 32) & 4294967295)::oid "
            "AND l.objid = (key.k & 4294967295)::oid",
            (str(upload_id),),
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _lock_schedule(tenant_id) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('schedule:' || %s::text, 0))",
            (str(tenant_id),),
        )


def _blocked(cursor, upload: Upload) -> bool:
    types = list(_BLOCKED_BY[upload.record_type])
    if not types:
        return False  # customers and products depend on nothing
    until = upload.created_at + timedelta(seconds=_SENT_TOGETHER_SECONDS)
    states = [str(state) for state in _ACTIVE]
    cursor.execute(_BLOCKED, (upload.tenant_id, types, states, until, upload.id))
    return cursor.fetchone()[0]


def tenant_busy(tenant_id, *, besides=None) -> bool:
    """Is a file of the tenant (other than `besides`) being processed by a live worker? Its
    load holds the tenant's merge lock until it ends: an upload started now would wait for
    the lock in a worker slot that another tenant's upload could use (two big files of one
    tenant would take both slots of a worker, and a small upload of another tenant would
    wait for the first to finish). One left `processing` by a dead worker does not count:
    nothing holds its lock, and the re-queue job sends it again."""
    running = Upload.objects.filter(
        tenant_id=tenant_id, state=UploadState.PROCESSING, source="file"
    ).exclude(id=besides)
    return any(
        upload_lock_holder(other) is not None for other in running.values_list("id", flat=True)
    )


def parents_unfinished(upload: Upload) -> bool:
    """The rule: has the tenant an unfinished upload of a type this one depends on (an
    earlier stage), received before it or sent with it (at most `_SENT_TOGETHER_SECONDS`
    after it)? Uploads sent later do not count: an upload waits and gives way a bounded
    number of times."""
    with connection.cursor() as cursor:
        return _blocked(cursor, upload)


class ParentsArriving:
    """The give-way probe, handed to the engine as `parents_coming`: the rule of
    `parents_unfinished`, asked while the upload runs. Its merge thread asks each time a
    chunk held rows for missing parents; True means an upload of theirs has arrived since
    this one started (it would have waited for it otherwise), so the load gives up
    (`engine.ParentsComing`) instead of holding rows that upload would bring the parents
    of, and the upload goes back to the queue (`upload_give_way`).

    Asked on a connection other than the upload's own, which the merge thread is using:
    `cursor()` gives a cursor on it (the progress writer's), one statement at a time, from
    any thread."""

    def __init__(self, upload: Upload, *, cursor: Callable[[], AbstractContextManager]):
        self.upload = upload
        self._cursor = cursor

    def __call__(self) -> bool:
        with self._cursor() as cursor:
            return _blocked(cursor, self.upload)


def upload_admit(*, upload_id) -> tuple[Upload | None, bool]:
    """Whether a worker may run the upload now: not when it is gone or finished, nor while
    `parents_unfinished` holds it back, nor while another of the tenant's files is being
    processed (`tenant_busy`); then `queued` becomes `waiting`, and the worker is free for
    other uploads until `upload_wake` queues it again. Returns the upload as found, and
    the answer."""
    with transaction.atomic():
        upload = Upload.objects.filter(id=upload_id).first()
        if upload is None or upload.is_terminal:
            return upload, False
        log_bind(tenant_id=upload.tenant_id, upload_id=upload.id)  # the task unbinds them
        _lock_schedule(upload.tenant_id)
        if parents_unfinished(upload):
            reason = "upload waiting for the tenant's earlier uploads"
        elif tenant_busy(upload.tenant_id, besides=upload.id):
            reason = "upload waiting for the tenant's upload being processed"
        else:
            return upload, True
        if Upload.objects.filter(id=upload.id, state=UploadState.QUEUED).update(
            state=UploadState.WAITING
        ):
            logger.info(reason, extra={"state": UploadState.WAITING})
        return upload, False


def upload_give_way(*, upload_id, until_received: bool = False) -> None:
    """After its load gave up on `ParentsArriving` (and rolled back): back in the queue as
    it was, never started, where it waits for those parents (`upload_run` looks at it
    again at once); unless another worker has taken it meanwhile. `until_received`: it
    gave up on bytes that arrive slower than it loads (`ReceiveBehind`): queued, but sent
    to a worker again only by its seal (docs/engine.md#process-while-receiving); or now,
    when the seal came after the worker gave up and before this (the seal then found the
    upload still the worker's, and sent it to none)."""
    with transaction.atomic():
        if upload_try_lock(upload_id):
            put_back = Upload.objects.filter(id=upload_id, state=UploadState.PROCESSING).update(
                state=UploadState.QUEUED,
                waits_for_bytes=until_received,
                started_at=None,
                bytes_done=0,
                rows_done=0,
                updated_at=timezone.now(),
            )
            # The update waited for a seal in progress: a sealed upload is read here.
            sealed = Upload.objects.filter(id=upload_id, waits_for_bytes=True).exclude(sha256="")
            if put_back and until_received and sealed.update(waits_for_bytes=False):
                transaction.on_commit(lambda: upload_enqueue(upload_id=upload_id))
    logger.info(
        "upload put back: its bytes arrive slower than it loads; it waits for the rest"
        if until_received
        else "upload put back: an upload of the parents its rows need has arrived",
        extra={"state": UploadState.QUEUED},
    )


def upload_wake(*, tenant_id) -> int:
    """Queue the tenant's oldest waiting upload that nothing blocks any more: no parents'
    upload unfinished, no other file of the tenant being processed. One at a time: the
    tenant's loads take its merge lock one after the other anyway, and each wakes the next
    as it ends (woken all at once, all but one would find the tenant busy and wait again).
    Returns how many it queued (0 or 1)."""
    with transaction.atomic():
        _lock_schedule(tenant_id)
        waiting = Upload.objects.filter(tenant_id=tenant_id, state=UploadState.WAITING)
        waiting = list(waiting.order_by("created_at", "id"))
        if waiting and tenant_busy(tenant_id):
            return 0  # the one being processed wakes the next when it ends
        for upload in waiting:
            if parents_unfinished(upload):
                continue
            Upload.objects.filter(id=upload.id).update(state=UploadState.QUEUED)
            logger.info(
                "upload queued: nothing blocks it any more",
                extra={"upload_id": str(upload.id), "state": UploadState.QUEUED},
            )
            transaction.on_commit(lambda queued=upload.id: upload_enqueue(upload_id=queued))
            return 1
    return 0
