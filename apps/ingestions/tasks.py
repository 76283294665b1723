from celery import shared_task
from django.db import InterfaceError, OperationalError


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def upload_process_task(upload_id: str) -> None:
    from apps.ingestions.services import upload_run  # local import: services import us

    upload_run(upload_id=upload_id)
