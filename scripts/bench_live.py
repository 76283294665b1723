"""`make bench`'s live phase: records sent as they happen, next to small file uploads sent
the same way, against one running stack (gunicorn and a Celery worker), each scenario on a
fresh tenant:

- uploads of 1 row and of 100 rows (`/ingest/comprehensive/`), the way a shop sent live
  data before live records: requests/s accepted, rows/s loaded, 202-to-loaded latency;
- live batches of 100 records (`/ingest/records/customers/`), as fast as the clients go:
  records/s accepted and merged, accept latency (all 8 always waiting for an answer: the
  latency is the queue at the server's limit, 8 over the rate);
- the same paced at 30,000 records/s, the rate the live records are to sustain: the accept
  latency there, counted from when each request was due (a late answer delays the
  client's next request, and that wait counts);
- live records one per request, as fast as the clients go: requests/s accepted;
- a steady 5,000 records/s: p99 from the 202 to the batch's rows in their final table.

Every figure comes with the resident memory of the web server and the worker (all their
processes) at the start and the end of the scenario. Clients are threads of this process on
keep-alive connections (`http.client`, cheap next to the server's own work); a 429 waits
its Retry-After and sends the same request again, as the project's client does.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from scripts.bench_cpu import cpu_now, cpu_use
from scripts.stack import process_tree, resident_mb, settle

CLIENTS = 8
_FINAL = ("completed", "completed_with_errors", "failed")


@dataclass
class Tally:
    """What the clients of one scenario saw."""

    requests: int = 0
    records: int = 0
    throttled: int = 0
    failed: int = 0
    ended: float = 0.0  # when the last client stopped
    latencies: list[float] = field(default_factory=list)
    accepted_at: dict[str, float] = field(default_factory=dict)  # resource -> time of its 202
    # Accepted, not yet seen done: what the poll asks about (a scan of `accepted_at` each
    # poll would cost the bench more and more CPU, taken from the stack it measures).
    waiting: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _random_id(rng: random.Random) -> str:
    """A random (version 4) uuid as text, as a shop's would be, without uuid4's system
    call: a third of its time, which the clients would take from the server's two cores."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _customer(n: int, rng: random.Random) -> bytes:
    return (
        f'{{"customer_id":"{_random_id(rng)}","name":"Live {n}","email":"live.{n}@example.com",'
        f'"metadata":{{"n":{n}}},"created_at":"2026-01-01T00:00:00Z"}}'
    ).encode()


def _body(records: int, counter: list[int], rng: random.Random | None = None) -> bytes:
    rng = rng or random.Random()
    start = counter[0]
    counter[0] += records
    return b"\n".join(_customer(n, rng) for n in range(start, start + records)) + b"\n"


class _Sender:
    """One client: a keep-alive connection, retrying 429 after its Retry-After."""

    def __init__(self, base: str, api_key: str):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"X-API-Key": api_key, "Content-Type": "application/x-ndjson"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(
        self, path: str, body: bytes, tally: Tally, records: int, due: float | None = None
    ) -> str | None:
        """Send until answered (a 429 after its Retry-After); the latency is counted from
        `due`, when a paced client meant to send, if it was late: a slow answer delays the
        client's next requests, and their wait counts too."""
        started = time.perf_counter() if due is None else min(due, time.perf_counter())
        while True:
            try:
                self.conn.request("POST", path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                time.sleep(0.05)
                continue
            if response.status == 429:
                with tally.lock:
                    tally.throttled += 1
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            break
        now = time.perf_counter()
        with tally.lock:
            if response.status not in (200, 201, 202):
                tally.failed += 1
                return None
            tally.requests += 1
            tally.records += records
            tally.latencies.append(now - started)
            resource = str(json.loads(data)["id"])
            tally.accepted_at[resource] = now
            tally.waiting.add(resource)
        return resource


def _drive(tally: Tally, base: str, api_key: str, path: str, records: int, seconds: float, rate):
    """CLIENTS threads posting `records` customers per request to `path` for `seconds`; with
    `rate` (records/s over all clients) each paces itself, else they go as fast as they can."""
    deadline = time.perf_counter() + seconds
    interval = CLIENTS * records / rate if rate else 0.0

    def client(number: int) -> None:
        sender = _Sender(base, api_key)
        counter = [number * 10**9]
        rng = random.Random()  # seeded from the system: every run's ids are new
        due = time.perf_counter() + interval * number / CLIENTS
        while time.perf_counter() < deadline:
            body = _body(records, counter, rng)
            if interval:
                time.sleep(max(0.0, due - time.perf_counter()))
                sender.post(path, body, tally, records, due)
                due += interval
            else:
                sender.post(path, body, tally, records)
        sender.conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.ended = time.perf_counter()


def _done_times(
    cursor, table: str, tally: Tally, sending: threading.Thread, processes: dict
) -> dict[str, float]:
    """Poll, while the clients send and until everything they got accepted is done (merged
    batch, finished upload), every 10 ms: the time each was first seen done. Stops at once
    when the web server or the worker has exited.

    A batch is done once it is no longer `accepted` (its 202 came after its commit, so it
    is there): the poll reads the scenario's tenant's accepted batches, a few hundred
    entries of a partial index (`batch_backlog`), rather than looking up every batch
    waiting, which took PostgreSQL 1.4 ms a poll (about a twentieth of one core) at
    30,000 records/s."""
    seen: dict[str, float] = {}
    deadline = None
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} process exited ({process.returncode}); see its log")
        with tally.lock:
            waiting = list(tally.waiting)
        if not sending.is_alive():
            deadline = deadline or time.perf_counter() + 600
            if not waiting or time.perf_counter() > deadline:
                return seen
        if waiting:
            done = _done(cursor, table, waiting)
            now = time.perf_counter()
            with tally.lock:
                tally.waiting.difference_update(done)
            for resource in done:
                seen[resource] = now
        time.sleep(0.01)


_UPLOADS_DONE = (
    "SELECT id::text FROM uploads WHERE id = ANY(%s::uuid[]) "
    "AND state IN ('completed', 'completed_with_errors', 'failed')"
)
# One scenario's batches are of one tenant: any of them names it.
_BATCHES_NOT_DONE = (
    "SELECT id::text FROM record_batches WHERE state = 'accepted' "
    "AND tenant_id = (SELECT tenant_id FROM record_batches WHERE id = %s)"
)


def _done(cursor, table: str, waiting: list[str]) -> set[str]:
    if table == "uploads":
        cursor.execute(_UPLOADS_DONE, (waiting,))
        return {resource for (resource,) in cursor.fetchall()}
    cursor.execute(_BATCHES_NOT_DONE, (int(waiting[0]),))
    return set(waiting).difference(resource for (resource,) in cursor.fetchall())


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    return sum(resident_mb(p) for p in process_tree(pid))


def _scenario(name, drive, *, cursor, table, processes, records_per_request) -> dict:
    memory_before = {n: _rss_mb(p.pid) for n, p in processes.items()}
    cpu_before = cpu_now(processes)
    started = time.perf_counter()
    tally = Tally()
    sending = threading.Thread(target=drive, args=(tally,))
    sending.start()
    seen = _done_times(cursor, table, tally, sending, processes)
    sending.join()
    cpu = cpu_use(
        cpu_before,
        cpu_now(processes),
        seconds=time.perf_counter() - started,
        requests=tally.requests,
    )
    sent_for = tally.ended - started
    finished = max(seen.values(), default=started)
    lags = [seen[r] - tally.accepted_at[r] for r in seen]
    return {
        "name": name,
        "records_per_request": records_per_request,
        "requests": tally.requests,
        "records": tally.records,
        "throttled": tally.throttled,
        "failed": tally.failed,
        "not_done": len(tally.accepted_at) - len(seen),
        "accepted_per_s": tally.records / sent_for,
        "requests_per_s": tally.requests / sent_for,
        "done_per_s": records_per_request * len(seen) / max(finished - started, 1e-9),
        "accept_p50_ms": 1000 * _percentile(tally.latencies, 0.50),
        "accept_p99_ms": 1000 * _percentile(tally.latencies, 0.99),
        "lag_p50_ms": 1000 * _percentile(lags, 0.50),
        "lag_p99_ms": 1000 * _percentile(lags, 0.99),
        "memory_mb": {n: (memory_before[n], _rss_mb(p.pid)) for n, p in processes.items()},
        "cpu": cpu,
    }


_UPLOAD = "/api/v1/ingest/comprehensive/?filename=customers.ndjson"
_LIVE = "/api/v1/ingest/records/customers/"
# name, path, records per request, table whose rows say done, longest run (s), records/s
SCENARIOS = (
    ("uploads of 1 row", _UPLOAD, 1, "uploads", 20, None),
    ("uploads of 100 rows", _UPLOAD, 100, "uploads", 20, None),
    ("live batches of 100", _LIVE, 100, "record_batches", None, None),
    ("live batches of 100 at 30,000 records/s", _LIVE, 100, "record_batches", None, 30000),
    ("live records one per request", _LIVE, 1, "record_batches", 30, None),
    ("live at a steady 5,000 records/s", _LIVE, 50, "record_batches", 30, 5000),
)


def phase_live(env: dict, *, seconds: float, make_tenant, report=None) -> list[dict]:
    """Every scenario on one stack, each for at most `seconds` (live batches of 100 for
    exactly that); `make_tenant(name)` gives an API key."""
    import psycopg

    from scripts.stack import running_stack

    out = []
    processes: dict = {}
    env = {**env, "API_RATE_LIMIT": "10000000/min"}  # the clients' speed, not the limit's
    with (
        running_stack(env=env, processes=processes) as base,
        psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn,
        conn.cursor() as cursor,
    ):
        # The poll's lookups by index whatever the statistics say: each scenario starts
        # analyzed (`settle`), so in the bench's database `record_batches` was analyzed
        # empty, and PostgreSQL read the whole table on every poll (100 a second, the
        # scenario's batches so far each time): a third more of PostgreSQL's CPU per batch
        # of 100, spent by the bench, not by the service it measures.
        cursor.execute("SET enable_seqscan = off")
        for number, (name, path, records, table, longest, rate) in enumerate(SCENARIOS):
            # after a minute of batches (1.8 million rows), single records ran at 454
            # requests/s in one run without this, 590 in one with it
            settle(cursor)
            key = make_tenant(f"bench-live-{number}")
            duration = min(seconds, longest or seconds)

            def drive(tally, path=path, records=records, duration=duration, rate=rate, key=key):
                _drive(tally, base, key, path, records, duration, rate)

            result = _scenario(
                name,
                drive,
                cursor=cursor,
                table=table,
                processes=processes,
                records_per_request=records,
            )
            out.append(result)
            if report is not None:
                report(result)
    return out


def live_table(results: list[dict]):
    """The scenarios as a rich table, small uploads first."""
    from rich.table import Table

    table = Table(title="live records next to small uploads (8 clients, one tenant each)")
    columns = (
        "scenario",
        "req/s",
        "accepted rec/s",
        "final rec/s",
        "accept p50/p99 ms",
        "202 to final p50/p99 ms",
        "RSS web, worker MB",
        "429s",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        memory = ", ".join(f"{a:.0f}->{b:.0f}" for a, b in r["memory_mb"].values())
        table.add_row(
            r["name"],
            f"{r['requests_per_s']:,.0f}",
            f"{r['accepted_per_s']:,.0f}",
            f"{r['done_per_s']:,.0f}",
            f"{r['accept_p50_ms']:.0f}/{r['accept_p99_ms']:.0f}",
            f"{r['lag_p50_ms']:.0f}/{r['lag_p99_ms']:.0f}",
            memory,
            str(r["throttled"]),
        )
    return table


if __name__ == "__main__":  # a quick run on its own: python scripts/bench_live.py SECONDS
    import subprocess
    import sys

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20

    def tenant(name: str) -> str:
        created = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "create_tenant",
                f"{name}-{uuid.uuid4().hex[:6]}",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        return json.loads(created.stdout)["api_key"]

    phase_live(
        dict(os.environ), seconds=seconds, make_tenant=tenant, report=lambda r: print(json.dumps(r))
    )
