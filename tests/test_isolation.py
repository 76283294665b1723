"""The parallel test processes' own Redis databases (`tests/isolation.py`)."""

from __future__ import annotations

import pytest

from tests.isolation import redis_url_for


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
