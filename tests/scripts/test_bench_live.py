"""The live phase's measure of done: a batch the clients got a 202 for counts as merged once
it is no longer `accepted`, whatever the other tenants' batches are doing."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.ingestions.models import BatchState, RecordBatch
from scripts.bench_live import _done

pytestmark = pytest.mark.django_db


def _batch(tenant, state: str) -> str:
    batch = RecordBatch.objects.create(
        tenant=tenant, record_type="customers", state=state, records=1, rejected=0, accepted=1
    )
    return str(batch.id)


def test_batches_are_done_once_merged_and_not_before(tenant, other_tenant):
    merged = _batch(tenant, BatchState.MERGED)
    accepted = _batch(tenant, BatchState.ACCEPTED)
    _batch(other_tenant, BatchState.ACCEPTED)  # another tenant's backlog is not this one's
    with connection.cursor() as cursor:
        assert _done(cursor.cursor, "record_batches", [accepted, merged]) == {merged}
        assert _done(cursor.cursor, "record_batches", [accepted]) == set()
        RecordBatch.objects.filter(id=accepted).update(state=BatchState.MERGED)
        assert _done(cursor.cursor, "record_batches", [accepted, merged]) == {accepted, merged}
