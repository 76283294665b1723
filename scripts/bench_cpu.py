"""`make bench`'s account of where the CPU went: the machine's cores busy, and CPU time by
process, read from Linux's /proc (`scripts.stack.cpu_seconds`, `busy_seconds`).

On a machine whose cores are all busy, a figure is the machine's limit, not the service's
waits: these numbers tell which, and which process a request's or a phase's CPU went to.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

from scripts.stack import busy_seconds, cpu_seconds


@contextmanager
def phase_cpu() -> Iterator[dict]:
    """Fill the dict it yields, at the end of the block, with what the block cost: its
    wall `seconds`, this process's CPU seconds (`process`) and the rest of the machine's
    (`rest`: PostgreSQL, above all), and the machine's `cores_busy` on average; only the
    wall time without /proc."""
    out: dict = {}
    started, machine = time.perf_counter(), busy_seconds()
    mine = resource.getrusage(resource.RUSAGE_SELF)
    yield out
    seconds = time.perf_counter() - started
    out["seconds"] = seconds
    now, after = busy_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    if machine is None or now is None:
        return
    process = after.ru_utime + after.ru_stime - mine.ru_utime - mine.ru_stime
    out.update(
        process=process,
        rest=now - machine - process,
        cores_busy=(now - machine) / max(seconds, 1e-9),
    )


def phase_cpu_line(name: str, cpu: dict | None) -> str | None:
    """One line on a phase's CPU, or None without the counts."""
    if not cpu or "cores_busy" not in cpu:
        return None
    return (
        f"{name}: {cpu['cores_busy']:.2f} of {os.cpu_count()} cores busy over "
        f"{cpu['seconds']:.1f} s; CPU {cpu['process']:.1f} s in its process, "
        f"{cpu['rest']:.1f} s in the rest (PostgreSQL's processes above all)"
    )


def cpu_now(processes: dict) -> dict[str, float | None]:
    """CPU seconds so far: the web server's and the worker's processes, this one (the
    clients and the poll) and the whole machine's busy time."""
    mine = os.times()
    return {
        **{name: cpu_seconds(process.pid) for name, process in processes.items()},
        "bench": mine.user + mine.system,
        "machine": busy_seconds(),
    }


def cpu_use(before: dict, after: dict, *, seconds: float, requests: int) -> dict | None:
    """Where the CPU went between two `cpu_now`s: the machine's cores busy on average,
    and CPU ms per request for each process and for the rest (PostgreSQL, the broker, the
    kernel's network work); None where /proc has no machine-wide count."""
    if before["machine"] is None or after["machine"] is None or not requests:
        return None
    spent = {name: after[name] - before[name] for name in before}
    rest = spent.pop("machine") - sum(spent.values())
    per_request = {name: 1000 * value / requests for name, value in {**spent, "rest": rest}.items()}
    busy = (after["machine"] - before["machine"]) / max(seconds, 1e-9)
    return {"cores_busy": busy, "ms_per_request": per_request}


def live_cpu_table(results: list[dict]):
    """Where each scenario's CPU went: the machine's cores busy on average, from its first
    request until its last record was in its final table, and CPU ms per request by
    process; None without the counts (not Linux)."""
    from rich.table import Table

    if any(r["cpu"] is None for r in results):
        return None
    table = Table(title="CPU per request, ms (the same scenarios)")
    columns = ("scenario", "cores busy", "web", "worker", "bench clients", "rest")
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        spent = r["cpu"]["ms_per_request"]
        table.add_row(
            r["name"],
            f"{r['cpu']['cores_busy']:.2f} of {os.cpu_count()}",
            *(f"{spent[name]:.2f}" for name in ("web", "worker", "bench", "rest")),
        )
    table.caption = "rest: PostgreSQL, the broker and the kernel's network work"
    return table
