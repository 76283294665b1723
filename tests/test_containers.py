"""The container setup, checked without a Docker engine: `docker-compose config` accepts the
compose file and it has what the issue asks for, and the very commands the containers run
(read from docker-compose.yml, so a drift fails here) start and work outside containers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload
from apps.tenants.services import tenant_create
from scripts.stack import free_port, local_command, running_processes, wait_ready
from tests.conftest import wait_for
from tests.factories import database_url_of_tests

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = ("web", "celery_worker", "celery_beat", "db", "redis")
APP_SERVICES = ("web", "celery_worker", "celery_beat")


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """`docker-compose config` of the file (validated, defaults interpolated), as YAML."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "docker-compose is not installed: `apt-get install docker-compose` (.ci/run does)"
        )
    empty = tmp_path_factory.mktemp("compose") / "empty.env"
    empty.write_text("")
    # Only the file's own defaults: no .env, no variables of the calling shell.
    command = [binary, "--project-directory", str(ROOT), "--env-file", str(empty)]
    command += ["-f", str(COMPOSE_FILE), "config"]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    quiet = subprocess.run([*command, "-q"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    full = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return yaml.safe_load(full.stdout)


def test_docker_compose_accepts_the_file_with_five_healthy_services(compose):
    """The five services exist, each with a health check, images pinned to a version."""
    services = compose["services"]
    assert set(SERVICES) <= set(services)
    for name in SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, (name, test)
        assert test[1:], name
    assert services["db"]["image"].startswith("postgres:16.")
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-\w+)?", services["redis"]["image"])
    for name in APP_SERVICES:
        assert "build" in services[name], name


def test_the_services_keep_their_data_in_named_volumes(compose):
    """PostgreSQL, Redis and beat's schedule live in named volumes; beat's --schedule file
    is inside its volume."""
    assert {"pg_data", "redis_data", "beat_data"} <= set(compose["volumes"])
    services = compose["services"]
    assert "pg_data:/var/lib/postgresql/data:rw" in services["db"]["volumes"]
    assert "redis_data:/data:rw" in services["redis"]["volumes"]
    assert "beat_data:/beat:rw" in services["celery_beat"]["volumes"]
    beat = services["celery_beat"]["command"]
    assert beat[beat.index("--schedule") + 1].startswith("/beat/")


def test_the_app_waits_for_healthy_db_and_redis_and_for_the_migrations(compose):
    """web, worker and beat start once db and redis are healthy and the one-shot migrate
    service has succeeded; migrations run there, once."""
    services = compose["services"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        env = services[name]["environment"]
        assert (env["DJANGO_DEBUG"], env["LOG_FORMAT"]) == ("false", "json"), name
        assert re.fullmatch(r"postgresql://postgres:[^@]*@db:5432/commerce", env["DATABASE_URL"])
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert services["web"]["command"][0] == "gunicorn"
    assert services["celery_worker"]["command"][:3] == ["celery", "-A", "main"]
    assert "worker" in services["celery_worker"]["command"]
    assert "beat" in services["celery_beat"]["command"]


def test_the_image_is_slim_pinned_and_runs_as_a_non_root_user():
    """The Dockerfile starts from a pinned slim Python 3.11 and switches to a user."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users[-1:] not in ([], ["root"], ["0"]), users
    assert "pip install -r requirements.txt" in text


def test_env_example_lists_every_variable_the_settings_read():
    """Each environment variable read by main/settings.py (or the logging setup it calls)
    has a line in .env.example."""
    sources = (ROOT / "main" / "settings.py").read_text() + (
        ROOT / "apps" / "core" / "logs.py"
    ).read_text()
    names = set(
        re.findall(
            r"""(?:environ\.get|env_int|env_bool|env_float|env_list)\(\s*["']([A-Z0-9_]+)["']""",
            sources,
        )
    )
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "LOG_FORMAT"} <= names
    listed = set(
        re.findall(r"^#? ?([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    assert names - listed == set()


# --- the containers' commands, outside containers ---------------------------------------


def _raw_compose() -> dict:
    """The compose file itself (no docker-compose needed): commands and health checks."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _localize(argv: list[str], *, volumes: dict[str, Path], port: int) -> list[str]:
    """A container's command for this machine: programs from the virtualenv, volume paths
    in a temporary folder, port 8000 replaced by a free loopback port."""
    out = []
    for arg in local_command(argv):
        for inside, outside in volumes.items():
            if arg == inside or arg.startswith(inside + "/"):
                arg = str(outside) + arg[len(inside) :]
        out.append(arg.replace("0.0.0.0:8000", f"127.0.0.1:{port}").replace(":8000/", f":{port}/"))
    return out


def _json_lines(path: Path) -> list[dict]:
    """Every line of a log, parsed; as root, Celery first warns about it in plain text
    (before logging is set up), which is the only text allowed before the JSON lines."""
    lines = path.read_text(errors="replace").splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("{")), len(lines))
    preamble = "\n".join(lines[:first])
    if preamble:
        assert os.geteuid() == 0, preamble
        assert "superuser privileges" in preamble, preamble
    return [json.loads(line) for line in lines[first:] if line.strip()]


def _metrics(base: str) -> dict[tuple, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _requests(metrics: dict, method: str, status: str) -> float:
    return metrics.get(("http_requests_total", (("method", method), ("status", status))), 0.0)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_containers_commands_run_the_service_outside_containers(tmp_path):
    """gunicorn, the Celery worker and beat, started with the compose file's commands and
    its production settings (JSON logs, multiprocess metrics) on the test database and
    broker: the probes answer, `celery status` and `inspect active` see the worker, the
    health checks pass, an upload is processed with its ids on every JSON log line, and
    /metrics adds up the requests of every gunicorn worker, a dead one's included."""
    raw = _raw_compose()["services"]
    port = free_port()
    volumes = {"/beat": tmp_path / "beat", "/tmp/prometheus": tmp_path / "prometheus"}
    for folder in volumes.values():
        folder.mkdir()
    env = {
        "DATABASE_URL": database_url_of_tests(),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "test-only",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(volumes["/tmp/prometheus"]),
    }
    assert raw["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"

    def command(service: str, key: str = "command") -> list[str]:
        argv = raw[service][key] if key == "command" else raw[service][key]["test"][1:]
        return _localize(argv, volumes=volumes, port=port)

    migrate = subprocess.run(
        command("migrate"), cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    services = {"web": "web", "worker": "celery_worker", "beat": "celery_beat"}
    logs = tmp_path / "logs"
    with running_processes(
        {name: command(service) for name, service in services.items()}, env=env, log_dir=logs
    ) as processes:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, processes)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json() == {
            "status": "ok",
            "database": "ok",
            "broker": "ok",
        }
        run_env = {**os.environ, **env}
        node = f"celery@{socket.gethostname()}"

        def celery(*args: str) -> str:
            done = subprocess.run(
                local_command(["celery", "-A", "main", *args]),
                cwd=ROOT,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.stdout if done.returncode == 0 else ""

        wait_for(lambda: f"{node}: OK" in celery("status"), timeout=60, interval=1)
        assert f"{node}: OK" in celery("inspect", "active")

        for name, service in services.items():
            check = subprocess.run(
                command(service, "healthcheck"), cwd=ROOT, env=run_env, capture_output=True
            )
            assert check.returncode == 0, (name, check.stderr)

        # An upload through gunicorn, processed by the worker.
        tenant, issued = tenant_create(name="containers")
        rows = [
            customer_row(customer_id=uid(f"box-{n}"), email=f"b{n}@example.com") for n in range(3)
        ]
        response = httpx.post(
            f"{base}/api/v1/ingest/comprehensive/?filename=customers_1.ndjson",
            content=ndjson_bytes([*rows, {"customer_id": "not-a-uuid"}]),
            headers={"X-API-Key": issued.raw, "Content-Type": "application/x-ndjson"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        upload_id = response.json()["id"]
        wait_for(lambda: Upload.objects.get(id=upload_id).is_terminal, timeout=60)

        def worker_lines() -> list[dict]:
            return [e for e in _json_lines(logs / "worker.log") if e.get("upload_id") == upload_id]

        done = wait_for(
            lambda: [e for e in worker_lines() if e["message"] == "upload completed_with_errors"]
        )
        assert done[0]["rows"] == {
            "total": 4,
            "inserted": 3,
            "updated": 0,
            "unchanged": 0,
            "rejected": 1,
            "pending": 0,
            "duplicates": 0,
            "warned": 0,
        }
        for entry in worker_lines():
            assert entry["tenant_id"] == str(tenant.id), entry
            assert entry["task_id"] == done[0]["task_id"], entry
        web = _json_lines(logs / "web.log")
        access = [e for e in web if e.get("path") == "/api/v1/ingest/comprehensive/"]
        assert [(e["method"], e["status"], e["tenant_id"], e["upload_id"]) for e in access] == [
            ("POST", 202, str(tenant.id), upload_id)
        ]
        _json_lines(logs / "beat.log")

        # HTTP counts over several gunicorn workers, one of them replaced midway.
        before = _requests(_metrics(base), "GET", "404")
        for _ in range(5):
            assert httpx.get(f"{base}/no-such-page").status_code == 404
        served = {e["process"] for e in _json_lines(logs / "web.log") if e.get("status") == 404}
        assert served
        for pid in served:
            os.kill(pid, signal.SIGTERM)  # a worker of the gunicorn started above
        # a gevent worker takes up to a second to stop accepting, then ends its requests
        wait_for(lambda: not any(psutil.pid_exists(pid) for pid in served), timeout=40)
        for _ in range(5):
            wait_for(lambda: _answers(f"{base}/no-such-page"), timeout=30)
        after = _metrics(base)
        replaced = {e["process"] for e in _json_lines(logs / "web.log") if e.get("status") == 404}
        assert replaced - served, "the last requests were answered by a new gunicorn worker"
        assert _requests(after, "GET", "404") == before + 10
        assert after[("ingest_rows_total", _labels(tenant.id, "customers", "inserted"))] == 3
        assert after[("ingest_rows_total", _labels(tenant.id, "customers", "rejected"))] == 1
    assert {name: process.returncode for name, process in processes.items()} == {
        "web": 0,
        "worker": 0,
        "beat": 0,
    }, "a process did not stop cleanly"
    assert "Traceback" not in (logs / "worker.log").read_text(), "the worker logged an error"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 404
    except httpx.HTTPError:
        return False


def _labels(tenant_id, record_type: str, outcome: str) -> tuple:
    """The labels of a file upload's rows in `ingest_rows_total`."""
    labels = {"tenant_id": str(tenant_id), "type": record_type, "source": "file"}
    return tuple(sorted({**labels, "outcome": outcome}.items()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
