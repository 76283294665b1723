"""The tenants phase's report: several tenants compared with one tenant alone measured on
the same stack just before, the end-to-end phase's figure beside it, and how busy the CPU
was in each."""

from __future__ import annotations

import os
import time

from scripts.bench_cpu import phase_cpu
from scripts.bench_tenants import busy_share, tenants_lines

FAIRNESS = {"small_seconds": 0.21, "small_accept_seconds": 1.2, "big_seconds": 8.1, "big_rows": 7}


def _run(tenants: int, rows: int, seconds: float, busy: float | None) -> dict:
    return {"tenants": tenants, "rows": rows, "seconds": seconds, "cpu_busy": busy}


def test_two_tenants_are_compared_with_one_alone_on_the_same_stack():
    tenants = {
        "fairness": FAIRNESS,
        "quiet_seconds": 12.0,
        "alone": _run(1, 1_000_000, 10.0, 0.92),
        "several": _run(2, 2_000_000, 25.0, None),
    }
    lines = tenants_lines(tenants, {"seconds": 8.0}, 1_000_000)
    assert lines[1:] == [
        "one tenant alone, four files: 1,000,000 rows in 10.0 s, 100,000 rows/s, CPU 92% busy "
        "(started once the fairness loads' analytics were caught up, 12 s after them)",
        "2 tenants at once, four files each: 2,000,000 rows in 25.0 s, 80,000 rows/s: 80% of "
        "one tenant alone (64% of the end-to-end phase's 125,000 rows/s)",
    ]
    assert tenants_lines(tenants, None, 1_000_000)[2].endswith("80% of one tenant alone")


def test_the_cpu_busy_share_counts_this_process_spinning():
    with phase_cpu() as cpu:
        until = time.monotonic() + 0.3
        while time.monotonic() < until:
            pass
    share = busy_share(cpu)
    # one core of the machine's spun the whole time; the rest may have been idle
    assert share is not None
    assert 0.9 / _cores() <= share <= 1.0


def _cores() -> int:
    return os.cpu_count() or 1
