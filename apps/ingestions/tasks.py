"""The ingestion app's Celery tasks: an id comes in (or nothing), a service is called.

Services send these by name (`apps.ingestions.tasks.<name>`) and never import this module.
"""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from apps.ingestions.engine import StagingUnavailable
from apps.ingestions.services import (
    blob_purge_orphans,
    idempotency_purge,
    pending_expire,
    records_merge,
    session_expire,
    sessions_complete_full,
    upload_recover,
    upload_run,
)

# Work that must not be lost: acknowledged once done, sent again if its worker dies, and
# retried with backoff on what can succeed next time (a dropped connection, a full server).
_RETRIED = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "autoretry_for": (OperationalError, InterfaceError, StagingUnavailable),
    "retry_backoff": True,
    "max_retries": 5,
}


@shared_task(**_RETRIED)
def upload_process_task(upload_id: str) -> None:
    upload_run(upload_id=upload_id)


@shared_task(**_RETRIED)
def records_merge_task(tenant_id: str) -> int:
    return records_merge(tenant_id=tenant_id)


# Sent by every worker (main/celery.py) and by beat; acknowledged on receipt: a lost run is
# simply the next one.
@shared_task(ignore_result=True, acks_late=False)
def upload_requeue_task() -> int:
    sessions_complete_full()  # all their bytes in, no upload: they are registered first
    return upload_recover()


@shared_task(ignore_result=True)
def pending_expire_task() -> int:
    return pending_expire()


@shared_task(ignore_result=True)
def idempotency_purge_task() -> int:
    return idempotency_purge()


@shared_task(ignore_result=True)
def blob_purge_task() -> int:
    return blob_purge_orphans()


@shared_task(ignore_result=True)
def session_expire_task() -> int:
    return session_expire()
