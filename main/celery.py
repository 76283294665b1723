import logging
import os
import sys

from celery import Celery, bootsteps
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from apps.core.logs import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "main.settings")

logger = logging.getLogger(__name__)

app = Celery("main")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Task ids on every log line a task writes; Celery keeps Django's LOGGING (JSON or console).
connect_celery_signals()

UPLOAD_REQUEUE_TASK = "apps.ingestions.tasks.upload_requeue_task"
WEBHOOK_SWEEP_TASK = "apps.webhooks.tasks.webhook_sweep_task"


@worker_init.connect  # the worker's own process: the solo and threads pools run tasks here
@worker_process_init.connect  # each process of the prefork pool
def short_switch_interval(**kwargs) -> None:
    """Workers run pipelined loads, whose merge thread waits for the GIL once per statement:
    a short switch interval keeps those handovers off its path (see engine.SWITCH_INTERVAL).
    Set here, at process start, because it is the whole interpreter's setting."""
    from apps.ingestions.engine import SWITCH_INTERVAL

    sys.setswitchinterval(SWITCH_INTERVAL)


@task_prerun.connect
@task_postrun.connect
def task_connections(task=None, **kwargs) -> None:
    """Around every task, as Django does around every request: close a database connection
    that is broken, or older than DATABASE_CONN_MAX_AGE, and keep the others (Celery's own
    closing is off: settings.CELERY_DB_REUSE_MAX). A task run eagerly, inside its caller, is
    left alone, as Celery leaves it."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_shutdown.connect  # the solo and threads pools: the tasks' connection is this one
@worker_process_shutdown.connect  # each process of the prefork pool
def close_connections(**kwargs) -> None:
    """A kept connection is closed when its worker stops, not left for the server to find
    gone; first, webhook attempts under way beside the tasks end and log their outcome (a
    receiver that answered is not sent the event again once the lease is over)."""
    from django.conf import settings
    from django.db import connections

    from apps.webhooks.senders import senders_drain

    senders_drain(timeout=settings.WEBHOOK_TIMEOUT_SECONDS + 2)
    connections.close_all()


class Housekeeping(bootsteps.StartStopStep):
    """Every worker sends the re-queue job to a queue it reads, once connected and then every
    `WORKER_HOUSEKEEPING_SECONDS`, so an upload a dead worker left is picked up again where
    no beat runs too. Sent, not run here: this is the main process, which forks the pool and
    keeps no database connection. Several workers sending it at once is harmless (see
    `upload_recover`); a copy left unread past the next one expires unrun.

    Only this job and the webhook sweep (a delivery a killed worker held is due again once
    its lease is over): they are what a worker's death leaves undone, and an upload or an
    event must not hang for want of a beat. The others (pending expiry, idempotency, session
    and blob purges) work on hours and days, and stay beat's, as one schedule for the whole
    deployment."""

    requires = ("celery.worker.consumer.tasks:Tasks",)  # the task queues are declared

    def __init__(self, c, **kwargs):
        from django.conf import settings

        self.interval = settings.WORKER_HOUSEKEEPING_SECONDS
        self.timer_entry = None
        super().__init__(c, **kwargs)

    def include_if(self, c) -> bool:
        return self.interval > 0

    def start(self, c) -> None:
        self.send(c)
        self.timer_entry = c.timer.call_repeatedly(self.interval, self.send, (c,), priority=10)

    def stop(self, c) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    shutdown = stop

    def send(self, c) -> None:
        queues = list(c.app.amqp.queues.consume_from)
        default = c.app.conf.task_default_queue
        queue = default if default in queues or not queues else queues[0]
        try:
            for task in (UPLOAD_REQUEUE_TASK, WEBHOOK_SWEEP_TASK):
                c.app.send_task(task, queue=queue, expires=self.interval)
        except Exception:  # the broker is away: the consumer reconnects, and this runs again
            logger.warning("could not send the re-queue job", exc_info=True)


app.steps["consumer"].add(Housekeeping)
