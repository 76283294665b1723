"""`make bench`'s CPU accounting: what a process tree and the machine spent, read from /proc,
and the per-request and per-phase figures made from it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.bench_cpu import cpu_use, phase_cpu_line
from scripts.stack import busy_seconds, cpu_seconds, process_tree

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(busy_seconds() is None, reason="needs Linux's /proc")

_BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_tree_counts_its_children_cpu_and_a_gone_process_counts_nothing():
    """A parent that has waited on a child burning 0.4 s of CPU: the tree has spent that much."""
    child = _BURN.format(seconds=0.4)
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {child!r}])\n"
        "time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        # until the child has run, exited and been waited for
        while time.monotonic() < deadline and (
            len(process_tree(parent.pid)) > 1 or cpu_seconds(parent.pid) < 0.4
        ):
            time.sleep(0.05)
        # its time is the parent's now (read while it ran, the read could straddle the wait)
        assert 0.4 <= cpu_seconds(parent.pid) < 5
    finally:
        parent.kill()
        parent.wait()
    assert cpu_seconds(parent.pid) == 0


def test_the_machine_was_busy_at_least_for_the_cpu_this_process_burned():
    before = busy_seconds()
    _burn(0.3)
    assert busy_seconds() - before >= 0.25  # one tick of rounding either side


_PHASE = (
    "import json, time\n"
    "from scripts.bench_cpu import phase_cpu\n"
    "with phase_cpu() as cpu:\n"
    "    end = time.process_time() + 0.3\n"
    "    while time.process_time() < end: pass\n"
    "    time.sleep(0.2)\n"
    "print(json.dumps(cpu))"
)


def test_a_phase_reports_its_wall_time_its_process_cpu_and_the_rest():
    """Measured in a process of its own: this one's other threads (a test worker's Celery
    worker, say) would add their CPU to the phase's."""
    done = subprocess.run(
        [sys.executable, "-c", _PHASE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    cpu = json.loads(done.stdout)
    assert cpu["seconds"] >= 0.5
    assert 0.3 <= cpu["process"] < 0.5
    assert cpu["rest"] >= -0.05  # the machine's busy time and the process's differ by ticks
    assert 0.3 / cpu["seconds"] - 0.1 <= cpu["cores_busy"]
    line = phase_cpu_line("engine", cpu)
    assert line.startswith(f"engine: {cpu['cores_busy']:.2f} of ")
    assert f"CPU {cpu['process']:.1f} s in its process" in line


def test_cpu_use_splits_the_machine_s_time_per_request_and_the_rest():
    before = {"web": 10.0, "worker": 5.0, "bench": 1.0, "machine": 100.0}
    after = {"web": 13.0, "worker": 6.0, "bench": 1.5, "machine": 108.0}
    use = cpu_use(before, after, seconds=4.0, requests=1000)
    assert use == {
        "cores_busy": 2.0,
        "ms_per_request": {"web": 3.0, "worker": 1.0, "bench": 0.5, "rest": 3.5},
    }


def test_cpu_use_is_none_without_the_machine_s_count_or_a_request():
    counts = {"web": 1.0, "machine": 1.0}
    assert cpu_use({**counts, "machine": None}, counts, seconds=1, requests=5) is None
    assert cpu_use(counts, counts, seconds=1, requests=0) is None
