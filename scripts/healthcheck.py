"""Health checks for the containers (the images have no curl): exit 0 when healthy.

python scripts/healthcheck.py web [URL]         # URL answers 200 (default: /readyz on :8000)
python scripts/healthcheck.py worker            # this host's Celery worker answers a ping
python scripts/healthcheck.py beat FILE [AGE]   # beat wrote its schedule FILE in AGE s (600)
"""

from __future__ import annotations

import glob
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path


def web(url: str = "http://127.0.0.1:8000/readyz") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own URL
            return response.status == 200
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def worker() -> bool:
    """The worker started with the default node name (celery@<host>) on this host replies."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from main.celery import app

    name = f"celery@{socket.gethostname()}"
    replies = app.control.ping(destination=[name], timeout=5)
    if not any(name in reply for reply in replies):
        print(f"{name} did not answer a ping", file=sys.stderr)
        return False
    return True


def beat(schedule: str, max_age: str = "600") -> bool:
    """Beat rewrites its schedule file every few minutes (at most every 3 min plus one
    tick); dbm may add a suffix to the name."""
    files = glob.glob(glob.escape(schedule) + "*")
    age = time.time() - max((os.path.getmtime(f) for f in files), default=0)
    if age > float(max_age):
        print(f"{schedule}: not written for {age:.0f} s", file=sys.stderr)
        return False
    return True


CHECKS = {"web": web, "worker": worker, "beat": beat}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CHECKS:
        sys.exit(__doc__)
    sys.exit(0 if CHECKS[sys.argv[1]](*sys.argv[2:]) else 1)
