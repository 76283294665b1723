"""`make bench`'s big-file phase: one NDJSON file of `--big-rows` customers (about 200 bytes
each: 10 million make a file of about 2 GB) uploaded through the API to a fresh tenant on
one stack (gunicorn, and a worker of concurrency 2), timed from the first byte sent to the
upload completed.

Each process of the stack (gunicorn's master and its workers, Celery's main process and
its pool) has its resident memory sampled every 0.2 s; the figure is the largest peak of a
single process of the web server and of the worker, next to that process's size before
the upload. A file's rows are streamed in and loaded chunk by chunk, so neither should
grow with the file. Two seconds into the load another tenant sends 1,000 customers: the
time from its 202 to its upload completed is printed too (fairness between tenants).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from scripts.stack import process_tree, resident_mb, running_stack

_FINAL = ("completed", "completed_with_errors", "failed")


def _row(n: int) -> str:
    return (
        f'{{"customer_id":"00000000-0000-4000-8000-{n:012d}",'
        f'"name":"Big Customer Number {n}","email":"big.customer.{n}@example.com",'
        f'"metadata":{{"tier":"gold","source":"bench","visits":{n}}},'
        '"created_at":"2026-01-01T00:00:00Z"}\n'
    )


def write_big_file(path: Path, rows: int) -> int:
    """`rows` valid customers, 100,000 lines at a time; the file's size in bytes."""
    with path.open("w", encoding="ascii") as out:
        for start in range(0, rows, 100_000):
            out.write("".join(_row(n) for n in range(start, min(rows, start + 100_000))))
    return path.stat().st_size


class _Sampler:
    """Every process under each named root: its size at the start and its peak."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots
        self.start = {name: self._sizes(pid) for name, pid in roots.items()}
        self.peak = {name: dict(sizes) for name, sizes in self.start.items()}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _sizes(root: int) -> dict[int, float]:
        return {pid: resident_mb(pid) for pid in process_tree(root)}

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            for name, root in self.roots.items():
                for pid, size in self._sizes(root).items():
                    peak = self.peak[name]
                    peak[pid] = max(peak.get(pid, 0.0), size)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def largest(self, name: str) -> tuple[float, float]:
        """(size before, peak) of the process of `name` whose peak was the largest."""
        pid, peak = max(self.peak[name].items(), key=lambda item: item[1])
        return self.start[name].get(pid, 0.0), peak


def phase_big(env: dict, folder: Path, make_tenant, rows: int) -> dict:
    import httpx

    from scripts.bench_e2e import send_file

    path = folder / "customers_big.ndjson"
    size = write_big_file(path, rows)
    headers = {"X-API-Key": make_tenant("bench-big"), "Content-Type": "application/x-ndjson"}
    processes: dict = {}
    try:
        with (
            running_stack(env=env, processes=processes) as base,
            httpx.Client(base_url=base, timeout=3600) as client,
            _Sampler({name: processes[name].pid for name in ("web", "worker")}) as memory,
        ):
            started = time.perf_counter()
            url = send_file(client, path, headers)
            received = time.perf_counter()
            fairness = _small_meanwhile(client, url, headers, make_tenant)
            while (upload := client.get(url, headers=headers).json())["state"] not in _FINAL:
                time.sleep(0.5)
            ended = time.perf_counter()
    finally:
        path.unlink(missing_ok=True)
    return {
        **fairness,
        "rows": upload["rows"]["inserted"],
        "bytes": size,
        "state": upload["state"],
        "receive_seconds": received - started,
        "seconds": ended - started,
        "web_mb": memory.largest("web"),
        "worker_mb": memory.largest("worker"),
    }


def _small_meanwhile(client, big_url: str, big_headers: dict, make_tenant) -> dict:
    """Once the big file is loading, another tenant's 1,000 customers: seconds from its 202
    to completed, and whether the big file was still loading then."""
    from scripts.bench_tenants import TenantApi, small_file

    while client.get(big_url, headers=big_headers).json()["state"] not in ("processing", *_FINAL):
        time.sleep(0.1)
    time.sleep(2)  # well into the load
    small = TenantApi(client, make_tenant("bench-big-small"))
    url = small.send("customers_small.ndjson", small_file())
    accepted = time.perf_counter()
    done = small.done(url)
    state = client.get(big_url, headers=big_headers).json()["state"]
    return {"small_seconds": done - accepted, "big_state_then": state}


def big_lines(big: dict, e2e: dict | None, e2e_rows: int) -> list[str]:
    rate = big["rows"] / big["seconds"]
    line = (
        f"big file: {big['rows']:,} rows ({big['bytes'] / 1e9:.2f} GB) through the API and a "
        f"worker in {big['seconds']:.1f} s (received in {big['receive_seconds']:.1f} s): "
        f"{rate:,.0f} rows/s, {big['state']}"
    )
    if e2e is not None:
        line += f"; the end-to-end phase's files: {e2e_rows / e2e['seconds']:,.0f} rows/s"
    web, worker = big["web_mb"], big["worker_mb"]
    memory = (
        f"big file: peak memory of one process: web {web[0]:.0f} -> {web[1]:.0f} MB, "
        f"worker {worker[0]:.0f} -> {worker[1]:.0f} MB (its size before the upload -> its peak)"
    )
    fair = (
        f"big file: another tenant's 1,000-row upload sent during its load completed "
        f"{big['small_seconds']:.2f} s after its 202 (the big file then: {big['big_state_then']})"
    )
    return [line, memory, fair]
