"""The webhooks app's Celery tasks. Services send them by name and never import this module.

A delivery's state lives in PostgreSQL, so a message is only a wake-up: acknowledged on
receipt, and a lost one is the sweep's to make up for (`webhook_sweep`). The attempt itself
is made beside the worker's slots (`senders`), so that a slow receiver never holds one."""

from celery import shared_task

from apps.webhooks.senders import send_beside
from apps.webhooks.services import webhook_purge, webhook_sweep


@shared_task(ignore_result=True, acks_late=False)
def webhook_deliver_task(delivery_id: int) -> None:
    send_beside(delivery_id)


# Sent by beat and by every worker's housekeeping (main/celery.py).
@shared_task(ignore_result=True, acks_late=False)
def webhook_sweep_task() -> int:
    return webhook_sweep()


@shared_task(ignore_result=True)
def webhook_purge_task() -> int:
    return webhook_purge()
