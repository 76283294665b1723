import os

from celery import Celery

from apps.core.logs import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")

app = Celery("main")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Task ids on every log line a task writes; Celery keeps Django's LOGGING (JSON or console).
connect_celery_signals()
