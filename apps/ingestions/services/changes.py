"""The final tables' change feed (`engine.changes`): waking its reader, the analytics
refresh, once a merge that noted changes commits.

No wake-up is lost: the merge marks the tenant's `final_change_wakes` row in its own
transaction, and the reader deletes that row only after reading, waiting for merges that
marked it to commit and then looking for changes once more (`analytics_refresh`). So a
merge either finds the row gone and sends the reader itself, or is seen by the reader.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import connection, transaction

from apps.ingestions.models import FinalChangeWake

logger = logging.getLogger("apps.ingestions.services")

CHANGES_READER_TASK = "apps.analytics.tasks.analytics_refresh_task"  # by name: see tasks

# Marked (a new row, or the one there updated) when the tenant has changes noted. The
# reader is sent when the row is new, or when it was sent so long ago that its message was
# likely lost (a second reader waits for the first and finds nothing left).
_WAKE = """
INSERT INTO final_change_wakes AS w (tenant_id, sent_at)
SELECT %(tenant)s, now() WHERE EXISTS (SELECT 1 FROM final_changes WHERE tenant_id = %(tenant)s)
ON CONFLICT (tenant_id) DO UPDATE
SET sent_at = CASE WHEN w.sent_at < now() - interval '30 seconds' THEN now() ELSE w.sent_at END
RETURNING sent_at = now()
"""


def changes_wake(*, tenant_id) -> None:
    """In a merge's transaction: when the tenant has changes noted, mark its wake row, and
    send the reader on commit unless one was sent already (less than 30 s ago)."""
    with connection.cursor() as cursor:
        cursor.execute(_WAKE, {"tenant": tenant_id})
        row = cursor.fetchone()
    if row is not None and row[0]:
        transaction.on_commit(lambda: changes_reader_send(tenant_id=tenant_id))


def changes_reader_send(*, tenant_id, countdown: float | None = None) -> None:
    """Send the tenant's reader."""
    try:
        current_app.send_task(CHANGES_READER_TASK, args=[str(tenant_id)], countdown=countdown)
    except Exception:  # the next merge sends it again; a read catches up meanwhile
        logger.warning("analytics refresh of tenant %s not sent", tenant_id, exc_info=True)
        FinalChangeWake.objects.filter(tenant_id=tenant_id).delete()
