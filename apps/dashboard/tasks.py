"""The dashboard's Celery task: expired sign-ins purged (beat, hourly)."""

from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone


@shared_task(ignore_result=True)
def dashboard_sessions_purge_task() -> int:
    """Delete the dashboard's sessions past their expiry (Django's `clearsessions` does the
    same): nothing else removes them, and each sign-in leaves one."""
    return Session.objects.filter(expire_date__lt=timezone.now()).delete()[0]
