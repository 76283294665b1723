"""`make bench`: the engine's speed and memory next to a raw COPY of the same rows.

Runs in a fresh database of its own (`<name>_bench`, dropped afterwards unless --keep):
1. generates about one million rows for one tenant (50k customers, 5k products, 250k
   orders, ~700k order items);
2. raw COPY: a child process streams each file, decodes each line and COPYs its values
   into unconstrained tables (no validation, no keys, no merge): the floor any loader of
   these files pays;
3. engine: another child process ingests the same files with the engine (validate, stage
   with COPY, merge with keys and foreign keys), in dependency order;
4. analytics: the engine phase's tenant's copies brought up to date, each analytics
   endpoint timed on it (p50/p95 over 50 varied ranges), and the files loaded for three
   new tenants without, with and without the change feed (`scripts/bench_analytics.py`);
5. rules: the order items again, for two new tenants (their parents loaded first), one
   without rules and one with a rule set of ten keywords (`BENCH_RULES`), in one process;
6. end to end: the same files uploaded through the API (gunicorn) and a Celery worker
   (`scripts/bench_e2e.py`);
7. big file: one file of ten million customers through the API and a worker, with the
   peak memory of each web and worker process (`scripts/bench_bigfile.py`);
8. live: records sent as they happen next to small uploads sent the same way
   (`scripts/bench_live.py`);
9. prints rows/s per type and overall, the ratio of the two, the engine process's peak
   memory (max RSS), and the live figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.ingestions.engine import RECORD_ORDER  # noqa: E402 - needs ROOT on the path


def _child(args: list[str], env: dict) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench step failed: {' '.join(args[:3])}")
    return done.stdout


def _settle(url: str, env: dict) -> None:
    """Start each phase with the same server state: no checkpoint (and its full-page
    writes) left pending from the phase before (best effort: it needs the right to), and
    no task queued by the phases before. Those are the analytics refreshes of their
    tenants (about 20 s of a worker per million rows), which the next phase's worker would
    run first; no later phase reads those tenants, and the analytics phase times catching
    up on its own. Their wake rows go too, so a later merge of theirs sends a refresh."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("CHECKPOINT")
        conn.execute("DELETE FROM final_change_wakes")
    _purge(env)


def _purge(env: dict) -> None:
    _child(["-m", "celery", "-A", "main", "purge", "-f", "-Q", env["CELERY_QUEUE"]], env)


def _base_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from main.embedded import embedded_database_url

    return embedded_database_url()


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def main() -> None:
    args = _arguments()
    if args.phase == "raw":
        from scripts.bench_engine import phase_raw

        print(json.dumps(phase_raw(args.dir)))
        return
    if args.phase == "engine":
        from scripts.bench_engine import phase_engine

        print(json.dumps(phase_engine(args.dir, args.tenant)))
        return
    if args.phase == "analytics":
        from scripts.bench_analytics import phase_analytics

        print(json.dumps(phase_analytics(args.dir, args.tenant)))
        return
    if args.phase == "rules":
        from scripts.bench_rules import phase_rules

        print(json.dumps(phase_rules(args.dir)))
        return

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 120)
    raw, eng, analytics, rules, e2e, tenants, big, live = _run(args, console)
    from scripts.bench_engine import engine_report

    engine_report(console, raw, eng, e2e)
    rows = sum(eng[name]["rows"] for name in RECORD_ORDER)
    if tenants is not None:
        from scripts.bench_tenants import tenants_lines

        console.print(*tenants_lines(tenants, e2e, rows), sep="\n")
    if big is not None:
        from scripts.bench_bigfile import big_lines

        console.print(*big_lines(big, e2e, rows), sep="\n")
    if analytics is not None:
        from scripts.bench_analytics import analytics_tables

        console.print(*analytics_tables(eng, analytics))
    if rules is not None:
        from scripts.bench_rules import rules_table

        console.print(rules_table(eng, rules))
    if live:
        from scripts.bench_cpu import live_cpu_table
        from scripts.bench_live import live_table

        console.print(live_table(live))
        cpu = live_cpu_table(live)
        if cpu is not None:
            console.print(cpu)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--orders", type=int, default=250_000)
    parser.add_argument("--items-per-order", type=float, default=2.8)
    parser.add_argument("--keep", action="store_true", help="keep the bench database and files")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run")
    parser.add_argument("--no-live", action="store_true", help="skip the live records run")
    parser.add_argument("--no-rules", action="store_true", help="skip the rules run")
    parser.add_argument(
        "--no-tenants", action="store_true", help="skip the fairness and several-tenants run"
    )
    parser.add_argument(
        "--no-analytics", action="store_true", help="skip the analytics endpoints and loads"
    )
    parser.add_argument(
        "--big-rows",
        type=int,
        default=10_000_000,
        help="rows of the big file sent through the API (0 skips that phase)",
    )
    parser.add_argument(
        "--live-seconds",
        type=float,
        default=60,
        help="how long clients send live batches of 100 (600 to watch memory for 10 minutes)",
    )
    parser.add_argument(
        "--phase", choices=("raw", "engine", "analytics", "rules"), help=argparse.SUPPRESS
    )
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tenant", help=argparse.SUPPRESS)
    return parser.parse_args()


def _phase_env(bench_url: str) -> dict[str, str]:
    """As in production: DEBUG off (no per-query bookkeeping), a secret and a queue of this
    run's own (a broker shared with other workers: theirs are left alone)."""
    env = {**os.environ, "DATABASE_URL": bench_url, "DJANGO_DEBUG": "false"}
    queue = f"bench-{secrets.token_hex(4)}"
    return {**env, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "CELERY_QUEUE": queue}


def _run(args: argparse.Namespace, console) -> tuple:
    """Every phase in a fresh database of its own: (raw, engine, analytics, rules, end to
    end, tenants, big file, live; each but the first two None when skipped)."""
    # long: one short block per phase, in the order they run, all in the one database
    import psycopg

    base = _base_url()  # keeps the embedded server up for the whole run
    db = (urlsplit(base).path.lstrip("/") or "postgres") + "_bench"
    bench_url = _with_db(base, db)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    env = _phase_env(bench_url)
    try:
        console.print(f"[bold]bench[/] database {db}: migrating")
        _child(["manage.py", "migrate", "--verbosity", "0"], env)
        tenant_id, folder = _generate(args, console, env)
        console.print("raw COPY into unconstrained tables ...")
        _settle(bench_url, env)
        raw = json.loads(_child(["scripts/bench.py", "--phase", "raw", "--dir", str(folder)], env))
        console.print("engine ...")
        _settle(bench_url, env)
        phase = ["scripts/bench.py", "--phase", "engine", "--dir", str(folder), "--tenant"]
        eng = json.loads(_child([*phase, tenant_id], env))
        analytics = None
        if not args.no_analytics:
            console.print("analytics endpoints, the engine without and with the change feed ...")
            _settle(bench_url, env)
            phase = ["scripts/bench.py", "--phase", "analytics", "--dir", str(folder), "--tenant"]
            analytics = json.loads(_child([*phase, tenant_id], env))
        rules = None
        if not args.no_rules:
            console.print("order items without and with a tenant's rules ...")
            _settle(bench_url, env)
            command = ["scripts/bench.py", "--phase", "rules", "--dir", str(folder)]
            rules = json.loads(_child(command, env))
        e2e = None
        if not args.no_e2e:
            console.print("end to end: HTTP API (gunicorn) and a Celery worker ...")
            _settle(bench_url, env)
            from scripts.bench_e2e import phase_e2e

            e2e = phase_e2e(folder, env, _child)
        tenants = None
        if not args.no_tenants:
            from scripts.bench_tenants import phase_tenants

            console.print("fairness, and several tenants at once ...")
            _settle(bench_url, env)
            tenants = phase_tenants(folder, env, _tenant_maker(env))
        big = None
        if args.big_rows:
            from scripts.bench_bigfile import phase_big

            console.print(f"a file of {args.big_rows:,} rows through the API ...")
            _settle(bench_url, env)
            big = phase_big(env, folder, _tenant_maker(env), args.big_rows)
        live = None
        if not args.no_live:
            from scripts.bench_live import phase_live

            console.print("live records next to small uploads (8 clients each) ...")
            _settle(bench_url, env)
            live = phase_live(env, seconds=args.live_seconds, make_tenant=_tenant_maker(env))
    finally:
        with contextlib.suppress(SystemExit):  # the run's queue left empty on the broker
            _purge(env)
        if not args.keep:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return raw, eng, analytics, rules, e2e, tenants, big, live


def _tenant_maker(env: dict):
    def make(name: str) -> str:
        created = _child(["manage.py", "create_tenant", name, "--json"], env)
        return json.loads(created)["api_key"]

    return make


_SIZES = ("customers", "products", "orders", "items-per-order")


def _generate(args: argparse.Namespace, console, env: dict) -> tuple[str, Path]:
    """One tenant's files, as `manage.py generate_data` writes them: (tenant id, folder)."""
    data = ROOT / "bench_data"
    console.print(
        f"generating {args.customers} customers, {args.products} products, "
        f"{args.orders} orders, ~{args.items_per_order} items per order"
    )
    sizes = [f"--{name}={getattr(args, name.replace('-', '_'))}" for name in _SIZES]
    command = ["manage.py", "generate_data", "--out", str(data), "--tenants", "1", "--seed", "1"]
    _child(command + sizes, env)
    manifest = json.loads((data / "tenants.json").read_text())[0]
    return manifest["tenant_id"], data / manifest["dir"]


if __name__ == "__main__":
    main()
