"""The service's client: bulk upload of a data directory through the HTTP API, and its CLI.

    bulk-ingest --data-dir generated_data --api-url http://localhost:8000

(also `python bulk_ingest.py`, `scripts/bulk_ingest.py` or `python -m ingest_client`). Per
tenant, files go in dependency order, a stage's files in parallel; large files go through
resumable sessions; interrupted runs resume; each file's Idempotency-Key derives from its
content, so a rerun never loads anything twice. Needs only httpx and rich: it runs on any
machine that can reach the API.

Modules, each importing only those above it:
- `plan`: tenants and files of a data directory, staged in dependency order
- `state`: the resume state file and the content-derived Idempotency-Keys
- `transport`: the HTTP client, the API key, retries with backoff and Retry-After
- `report`: progress bars, the plan and result tables, the exit code
- `upload`: sending one file, in one request or through a resumable session
- `runner`: a run over tenants and stages, waiting for the server to process each stage
- `outcomes`: what the live client reports: counts, rejects, failures, `SendFailed`
- `live`: `Client(api_url, api_key).send(type, record)`, live records batched in the
  background (SPEC 9), on the same transport
- `position`: a file read line by line, followed, and where a stream has got to in it
- `stream`: the `stream` subcommand, NDJSON from stdin or a followed file through `Client`
- `cli`: the command's options and `main()` (`stream` as first argument runs `stream`)
"""

import ingest_client._requires  # noqa: F401 - first: what to install if httpx or rich is missing
from ingest_client.cli import main
from ingest_client.live import Client, Counts, Failure, Problem, Reject, SendFailed
from ingest_client.plan import ConfigError, FileJob, Tenant, TenantPlan, build_plan, load_tenants
from ingest_client.report import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    FileResult,
    Reporter,
    exit_code,
)
from ingest_client.runner import Options, Runner
from ingest_client.state import StateFile, idempotency_key
from ingest_client.transport import (
    Interrupted,
    KeyRefused,
    RequestFailed,
    RetryPolicy,
    Transport,
    open_client,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "Client",
    "ConfigError",
    "Counts",
    "Failure",
    "FileJob",
    "FileResult",
    "Interrupted",
    "KeyRefused",
    "Options",
    "Problem",
    "Reporter",
    "RequestFailed",
    "Reject",
    "RetryPolicy",
    "Runner",
    "SendFailed",
    "StateFile",
    "Tenant",
    "TenantPlan",
    "Transport",
    "build_plan",
    "exit_code",
    "idempotency_key",
    "load_tenants",
    "main",
    "open_client",
]
