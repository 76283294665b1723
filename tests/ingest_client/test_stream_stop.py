"""`stream` stopped while it sends what it has read: a first Ctrl-C or SIGTERM that comes
after the input is read to its end, while the last batches are being sent, still lets them
be sent (it gave them up, as a second Ctrl-C does); a second one gives them up."""

from __future__ import annotations

import signal
import subprocess

import pytest

from apps.ingestions.models import Customer
from apps.tenants.services import tenant_create
from tests.ingest_client.test_live import ROOT, ForwardingProxy, lines, signalled, stream, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def slow(live_stack):
    proxy = ForwardingProxy(live_stack, delay=0.6)
    yield proxy
    proxy.close()


def _streaming(tmp_path, url: str, key: str) -> subprocess.Popen:
    """`stream` of 3,000 customers from stdin (a file, read at once), batches of 500."""
    path = tmp_path / "customers.ndjson"
    path.write_text(lines(range(3000)))
    command = stream(
        "--type", "customers", "--api-url", url, "--api-key", key,
        "--batch-records", "500", "--retries", "2",
    )  # fmt: skip
    with path.open("rb") as stdin:
        return subprocess.Popen(
            command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT,
        )  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_first_stop_after_the_input_ended_still_sends_what_was_read(tmp_path, slow, signum):
    """Stopped once during the final flush (the first batch's answer on its way): all
    3,000 records are sent and merged, exit 0 (2,500 were given up, exit 2)."""
    tenant, issued = tenant_create(name=f"stop-{signum}")
    process = _streaming(tmp_path, slow.url, issued.raw)
    out, err = signalled(process, signum, ready=lambda: slow.posts)
    assert process.returncode == 0, out + err
    assert "stopping: sending what was read" in err
    assert "3,000 accepted, 0 rejected, 0 not sent" in out
    wait_for(lambda: Customer.objects.filter(tenant_id=tenant.id).count() == 3000)


def test_a_second_stop_gives_up_what_is_being_sent(tmp_path, slow):
    """Ctrl-C twice while the last batches are sent: what was not answered is given up
    and said, exit 2."""
    _, issued = tenant_create(name="stop-twice")
    process = _streaming(tmp_path, slow.url, issued.raw)
    out, err = signalled(process, signal.SIGINT, signal.SIGINT, ready=lambda: slow.posts)
    assert process.returncode == 2, out + err
    assert "not sent" in out + err
