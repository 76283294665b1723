"""`make bench`'s end-to-end phase: the generated files uploaded through the HTTP API
(gunicorn, all four at once) to a Celery worker, both started by `scripts/stack.py`;
timed from the first upload request to the last upload completed."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apps.ingestions.engine import RECORD_ORDER


def phase_e2e(folder: Path, env: dict, child) -> dict:
    """Upload the files through the API to a fresh tenant and time until all are done."""
    import httpx

    from scripts.stack import running_stack

    created = json.loads(child(["manage.py", "create_tenant", "bench-e2e", "--json"], env))
    headers = {"X-API-Key": created["api_key"], "Content-Type": "application/x-ndjson"}

    def send(client: httpx.Client, name: str) -> str:
        return send_file(client, folder / f"{name}_1.ndjson", headers)

    with running_stack(env=env) as base, httpx.Client(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        # all four at once, as a client may: the server runs them in dependency order
        with ThreadPoolExecutor(max_workers=len(RECORD_ORDER)) as pool:
            urls = list(pool.map(lambda name: send(client, name), RECORD_ORDER))
        states = []
        for url in urls:
            while (state := client.get(url, headers=headers).json()["state"]) not in (
                "completed",
                "completed_with_errors",
                "failed",
            ):
                # often enough to time the end closely, seldom enough that the polling
                # (a request and its queries each) takes next to nothing from the worker
                time.sleep(0.2)
            states.append(state)
        return {"seconds": time.perf_counter() - started, "states": states}


def send_file(client, path: Path, headers: dict) -> str:
    """POST the file at `path` as a raw body named by its file name (streamed from disk);
    the upload's URL."""
    with path.open("rb") as body:
        response = client.post(
            "/api/v1/ingest/comprehensive/",
            params={"filename": path.name},
            content=body,
            headers=headers,
        )
    response.raise_for_status()
    return response.json()["url"]
