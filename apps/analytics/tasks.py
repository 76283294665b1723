"""The analytics app's Celery task: the change feed's reader, sent by name by the ingestion
services after a merge (`apps.ingestions.services.changes`)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from apps.analytics.services import analytics_refresh


# Lost, it costs speed, not answers: a read catches up itself, and a merge 30 s on sends
# it again.
@shared_task(
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=5,
)
def analytics_refresh_task(tenant_id: str) -> int:
    return analytics_refresh(tenant_id=tenant_id)
