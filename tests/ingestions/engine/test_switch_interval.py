"""Python's switch interval is the interpreter's: the engine never changes it; the processes
that run loads set it once as they start (a Celery worker, `manage.py ingest_file`)."""

from __future__ import annotations

import io
import sys
import weakref

import pytest
from celery.signals import worker_init, worker_process_init
from django.core.management import call_command

from apps.ingestions import engine
from apps.ingestions.engine.testing import customer_row, uid
from apps.ingestions.models import Customer


@pytest.fixture
def switch_interval_set(monkeypatch) -> list[float]:
    """Every value given to `sys.setswitchinterval` during the test (none is applied)."""
    calls: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", calls.append)
    return calls


def test_a_pipelined_load_leaves_the_switch_interval_alone(
    tenant, ndjson, load, monkeypatch, switch_interval_set
):
    """A load over many chunks (three threads) sets no interpreter setting of its own."""
    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", 2)
    rows = [customer_row(customer_id=uid(f"sw{n}")) for n in range(9)]
    upload = load(tenant, ndjson("customers_1.ndjson", rows))
    assert (upload.state, upload.rows_inserted) == ("completed", 9)
    assert switch_interval_set == []


def _receivers(signal) -> list:
    return [r() if isinstance(r, weakref.ReferenceType) else r for _, r in signal.receivers]


def test_a_worker_sets_a_short_switch_interval_as_it_starts(switch_interval_set):
    """The worker's process and each process of its pool set `engine.SWITCH_INTERVAL`."""
    from main.celery import short_switch_interval

    assert short_switch_interval in _receivers(worker_init)
    assert short_switch_interval in _receivers(worker_process_init)
    short_switch_interval(sender=None)
    assert switch_interval_set == [engine.SWITCH_INTERVAL] == [0.0005]


@pytest.mark.django_db
def test_the_ingest_file_command_sets_a_short_switch_interval(tenant, ndjson, switch_interval_set):
    """`manage.py ingest_file` runs a load in its own process: it sets the interval first."""
    path = ndjson("customers_1.ndjson", [customer_row(customer_id=uid("sw-cmd"))])
    out = io.StringIO()
    call_command("ingest_file", str(path), "--tenant", str(tenant.id), stdout=out)
    assert switch_interval_set == [engine.SWITCH_INTERVAL]
    assert Customer.objects.filter(tenant=tenant, customer_id=uid("sw-cmd")).exists()
