"""`make bench`'s tenants phase, on one stack with the default worker (concurrency 2):

- **fairness**: tenant A sends its order items as two files at once (its parents loaded
  before); half a second later tenant B sends 1,000 customers. Timed: B's 202 to B's upload
  completed, and A's two files from first request to both completed;
- **several tenants at once**: one new tenant sends its four files at once (one tenant
  alone), then two new tenants send their four files each, all eight at once; rows/s over
  all of them from the first request to the last upload completed. The tenant alone runs
  on the same stack and database just before, so the two are compared on the same footing
  (the two at once find more rows in the tables); the end-to-end phase's figure is shown
  too. Each is started once the worker has caught up with the analytics of the loads
  before (as the end-to-end phase starts with none queued) and the server has settled
  (`settle`: vacuumed, analyzed, checkpointed, as every phase starts), and each comes with
  the share of the machine's CPU that was busy (`/proc/stat`): on the bench's two cores a
  tenant alone already keeps them nearly busy, so two at once can gain little over it.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apps.ingestions.engine import RECORD_ORDER
from scripts.bench_cpu import phase_cpu

_FINAL = ("completed", "completed_with_errors", "failed")
SMALL_ROWS = 1_000
TENANTS_AT_ONCE = 2


def small_file() -> bytes:
    lines = [
        f'{{"customer_id":"00000000-0000-4000-8000-{n:012d}","name":"Small {n}",'
        f'"email":"small.{n}@example.com","created_at":"2026-01-01T00:00:00Z"}}'
        for n in range(SMALL_ROWS)
    ]
    return ("\n".join(lines) + "\n").encode()


class TenantApi:
    def __init__(self, client, key: str):
        self.client = client
        self.headers = {"X-API-Key": key, "Content-Type": "application/x-ndjson"}

    def send(self, filename: str, body: bytes) -> str:
        response = self.client.post(
            "/api/v1/ingest/comprehensive/",
            params={"filename": filename},
            content=body,
            headers=self.headers,
        )
        response.raise_for_status()
        return response.json()["url"]

    def done(self, url: str, *, every: float = 0.02) -> float:
        """Wait until the upload at `url` has ended; the time it was seen so."""
        while self.client.get(url, headers=self.headers).json()["state"] not in _FINAL:
            time.sleep(every)
        return time.perf_counter()


def _fairness(client, folder: Path, make_tenant) -> dict:
    big, small = (
        TenantApi(client, make_tenant("bench-fair-a")),
        TenantApi(client, make_tenant("bench-fair-b")),
    )
    for name in RECORD_ORDER[:-1]:
        big.done(big.send(f"{name}_1.ndjson", (folder / f"{name}_1.ndjson").read_bytes()))
    lines = (folder / "order_items_1.ndjson").read_bytes().splitlines(keepends=True)
    halves = [b"".join(lines[: len(lines) // 2]), b"".join(lines[len(lines) // 2 :])]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        sent = [
            pool.submit(big.send, f"order_items_{n}.ndjson", half) for n, half in enumerate(halves)
        ]
        time.sleep(0.5)
        accepted_at = time.perf_counter()
        url = small.send("customers_small.ndjson", small_file())
        accepted = time.perf_counter()
        small_done = small.done(url)
        urls = [future.result() for future in sent]
    big_done = max(big.done(u, every=0.2) for u in urls)
    return {
        "small_accept_seconds": accepted - accepted_at,
        "small_seconds": small_done - accepted,
        "big_seconds": big_done - started,
        "big_rows": len(lines),
    }


def _several(client, folder: Path, make_tenant, count: int, label: str) -> dict:
    apis = [TenantApi(client, make_tenant(f"bench-{label}-{n}")) for n in range(count)]
    jobs = [(api, name) for api in apis for name in RECORD_ORDER]
    rows = count * sum(
        sum(1 for _ in (folder / f"{name}_1.ndjson").open("rb")) for name in RECORD_ORDER
    )
    started = time.perf_counter()
    with phase_cpu() as cpu, ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        urls = list(
            pool.map(
                lambda job: (
                    job[0],
                    job[0].send(f"{job[1]}_1.ndjson", (folder / f"{job[1]}_1.ndjson").read_bytes()),
                ),
                jobs,
            )
        )
        ended = max(api.done(url, every=0.2) for api, url in urls)
    return {"tenants": count, "rows": rows, "seconds": ended - started, "cpu_busy": busy_share(cpu)}


def busy_share(cpu: dict) -> float | None:
    """The share of the machine's CPU time that was busy over a `phase_cpu` block (None
    off Linux): its cores busy over all its cores."""
    if "cores_busy" not in cpu:
        return None
    return min(1.0, cpu["cores_busy"] / (os.cpu_count() or 1))


def phase_tenants(folder: Path, env: dict, make_tenant) -> dict:
    """Fairness, then one tenant alone, then several tenants at once, on one stack."""
    import httpx

    from scripts.stack import running_stack

    env = {**env, "API_RATE_LIMIT": "10000000/min"}
    with running_stack(env=env) as base, httpx.Client(base_url=base, timeout=600) as client:
        fairness = _fairness(client, folder, make_tenant)
        quiet = _quiet(env["DATABASE_URL"])
        alone = _several(client, folder, make_tenant, 1, "alone")
        _quiet(env["DATABASE_URL"])
        return {
            "fairness": fairness,
            "quiet_seconds": quiet,
            "alone": alone,
            "several": _several(client, folder, make_tenant, TENANTS_AT_ONCE, "many"),
        }


def _quiet(url: str, timeout: float = 600) -> float:
    """Wait until the worker has caught up with the analytics of the loads before (no
    tenant's refresh left on its way), so that the next loads are timed on a quiet worker
    as the end-to-end phase's are, then settle the server; how long the wait took."""
    import psycopg

    from scripts.stack import settle

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT EXISTS (SELECT 1 FROM final_change_wakes)").fetchone()[0]:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the analytics refreshes did not end within {timeout:.0f}s")
            time.sleep(0.5)
        waited = time.perf_counter() - started
        with conn.cursor() as cursor:
            settle(cursor)
    return waited


def tenants_lines(tenants: dict, e2e: dict | None, rows_one: int) -> list[str]:
    """What the phase found, as lines to print."""
    fair, several, alone = tenants["fairness"], tenants["several"], tenants["alone"]
    rate, rate_alone = (run["rows"] / run["seconds"] for run in (several, alone))
    lines = [
        f"fairness: tenant B's {SMALL_ROWS:,}-row upload completed "
        f"{fair['small_seconds']:.2f} s after its 202 (accepted in "
        f"{fair['small_accept_seconds']:.2f} s) while tenant A loaded {fair['big_rows']:,} order "
        f"items as two files ({fair['big_seconds']:.1f} s for both)",
        f"one tenant alone, four files: {alone['rows']:,} rows in {alone['seconds']:.1f} s, "
        f"{rate_alone:,.0f} rows/s{_busy(alone)} (started once the fairness loads' analytics "
        f"were caught up, {tenants['quiet_seconds']:.0f} s after them)",
        f"{several['tenants']} tenants at once, four files each: {several['rows']:,} rows in "
        f"{several['seconds']:.1f} s, {rate:,.0f} rows/s{_busy(several)}: "
        f"{rate / rate_alone:.0%} of one tenant alone",
    ]
    if e2e is not None:
        e2e_rate = rows_one / e2e["seconds"]
        lines[-1] += f" ({rate / e2e_rate:.0%} of the end-to-end phase's {e2e_rate:,.0f} rows/s)"
    return lines


def _busy(run: dict) -> str:
    return "" if run["cpu_busy"] is None else f", CPU {run['cpu_busy']:.0%} busy"
