from celery import shared_task
from django.db import InterfaceError, OperationalError

from apps.ingestions.engine import StagingUnavailable

# Services import this module (to enqueue), so tasks import services inside the function.


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError, StagingUnavailable),
    retry_backoff=True,
    max_retries=5,
)
def upload_process_task(upload_id: str) -> None:
    from apps.ingestions.services import upload_run

    upload_run(upload_id=upload_id)


# Sent by every worker (main/celery.py) and by beat; acknowledged on receipt: a lost run is
# simply the next one.
@shared_task(ignore_result=True, acks_late=False)
def upload_requeue_task() -> int:
    from apps.ingestions.services import upload_recover

    return upload_recover()


@shared_task(ignore_result=True)
def pending_expire_task() -> int:
    from apps.ingestions.services import pending_expire

    return pending_expire()


@shared_task(ignore_result=True)
def idempotency_purge_task() -> int:
    from apps.ingestions.idempotency import idempotency_purge

    return idempotency_purge()


@shared_task(ignore_result=True)
def blob_purge_task() -> int:
    from apps.ingestions.storage import blob_purge_orphans

    return blob_purge_orphans()


@shared_task(ignore_result=True)
def session_expire_task() -> int:
    from apps.ingestions.sessions import session_expire

    return session_expire()
