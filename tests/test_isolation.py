"""The parallel test processes' own Redis databases (`tests/isolation.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.isolation import redis_url_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("url", "number", "expected"),
    [
        ("redis://127.0.0.1:6379/0", 1, "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379", 2, "redis://127.0.0.1:6379/2"),
        ("redis://user@host:6379/3?timeout=5", 1, "redis://user@host:6379/4?timeout=5"),
        ("rediss://host/15", 1, "rediss://host/0"),  # Redis has 16 databases
        ("redis://127.0.0.1:6379/5", 0, "redis://127.0.0.1:6379/5"),  # the first process
        ("amqp://guest@127.0.0.1:5672//", 1, "amqp://guest@127.0.0.1:5672//"),
        ("filesystem://", 1, "filesystem://"),
    ],
)
def test_each_process_past_the_first_moves_to_its_own_redis_database(url, number, expected):
    assert redis_url_for(url, number) == expected


def test_a_later_process_reads_its_own_queue_and_redis_database_into_the_settings():
    """As pytest-xdist starts its fourth process: the environment it inherits, then this
    module (loaded with `-p`), then the settings."""
    script = (
        "import tests.isolation, django; from django.conf import settings; django.setup(); "
        "print(settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_BROKER_URL, "
        "settings.CACHES['default']['LOCATION'], settings.WEBHOOK_QUEUE)"
    )
    env = {
        **os.environ,
        "PYTEST_XDIST_WORKER": "gw3",
        "DJANGO_SETTINGS_MODULE": "main.settings",
        "DATABASE_URL": "postgresql://user@127.0.0.1:5432/unused",  # read, never connected to
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "WEBHOOK_QUEUE": "hooks",
    }
    for name in ("CELERY_QUEUE", "REDIS_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "celery-gw3",
        "redis://127.0.0.1:6379/3",
        "redis://127.0.0.1:6379/3",
        "hooks-gw3",
    ]
