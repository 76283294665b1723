"""Per-key rate limits (SPEC 5): exactly the limit passes, however many clients and web
processes, with RateLimit-* headers on every keyed answer. Runs on each store: the
PostgreSQL counter (the default), and Redis (`RATE_LIMIT_STORE=redis`) when REDIS_URL or
CELERY_BROKER_URL names one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from rest_framework.test import APIClient

from apps.core.ratelimit import Rate, api_key_window, parse_rate, rate_limit_hit, window_name
from apps.ingestions.engine.testing import customer_row, ndjson_bytes
from apps.ingestions.models import Upload
from apps.tenants.services import (
    KeyCheck,
    api_key_revoke,
    tenant_create,
    tenant_from_api_key_counted,
)
from scripts.stack import BIN, free_port, running_processes, wait_ready
from tests.factories import database_url_of_tests

UPLOADS = "/api/v1/ingest/uploads/"
COMPREHENSIVE = "/api/v1/ingest/comprehensive/"
PROBLEM = "application/problem+json"
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def limit_headers(response) -> dict[str, str]:
    return {name: response.headers.get(name) for name in HEADERS}


@pytest.fixture
def key(db) -> str:
    return tenant_create(name="Acme")[1].raw


@pytest.fixture
def other_key(db) -> str:
    return tenant_create(name="Globex")[1].raw


@pytest.fixture(params=["postgres", "redis"])
def limit_store(request, settings) -> str:
    """Each store in turn. PostgreSQL counts a request in the API key's own lookup, Redis
    after it (`ApiKeyAuthentication`, `KeyRateThrottle`): the same answers either way."""
    if request.param == "redis" and not settings.REDIS_URL:
        pytest.skip("no Redis configured (CELERY_BROKER_URL or REDIS_URL)")
    settings.RATE_LIMIT_STORE = "redis" if request.param == "redis" else "postgresql"
    return request.param


# --- the rate setting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("600/min", Rate(600, 60)),
        ("600/m", Rate(600, 60)),
        ("10/s", Rate(10, 1)),
        ("50/10s", Rate(50, 10)),
        ("5000/hour", Rate(5000, 3600)),
        ("100000/day", Rate(100000, 86400)),
        (" 20 / 2 minutes ", Rate(20, 120)),
    ],
)
def test_a_rate_is_requests_per_period(rate, expected):
    """API_RATE_LIMIT reads as `<requests>/<period>`, the period optionally counted."""
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "600", "0/min", "10/0s", "ten/min", "10/week", "-1/s"])
def test_a_malformed_rate_is_refused(rate):
    """A rate that cannot be read is a configuration error, never a silent default."""
    with pytest.raises(ImproperlyConfigured):
        parse_rate(rate)


# --- headers and 429, through Django's test client -----------------------------------------


@pytest.mark.parametrize(
    ("accept", "query"),
    [("text/html", ""), ("application/xml", ""), ("*/*", "?format=xml")],
)
def test_the_key_and_the_limit_come_before_what_the_answer_is_asked_in(
    key, settings, limit_store, accept, query
):
    """An `Accept` or `?format=` the API cannot serve: without a key, 401; past the key's
    limit, 429 with its headers; within it, that request is counted. DRF negotiated first:
    406 or 404 without a key, uncounted and without RateLimit headers."""
    settings.API_RATE_LIMIT = "2/min"
    path = f"/api/v1/ingest/records/batches/{query}"
    anonymous = APIClient().get(path, HTTP_ACCEPT=accept)
    assert (anonymous.status_code, anonymous["Content-Type"]) == (401, "application/problem+json")
    client = client_with(key)
    first = client.get(path, HTTP_ACCEPT=accept)
    assert first.status_code in (400, 406), first.content
    assert first["RateLimit-Remaining"] == "1"
    assert client.get(path, HTTP_ACCEPT=accept)["RateLimit-Remaining"] == "0"
    limited = client.get(path, HTTP_ACCEPT=accept)
    assert (limited.status_code, limited["Content-Type"]) == (429, "application/problem+json")
    assert int(limited["Retry-After"]) > 0


def test_every_keyed_answer_carries_the_rate_limit_headers(key, settings, limit_store):
    """200, 202, 400, 404 and 405 alike carry Limit, Remaining (counting down), Reset and
    Policy."""
    settings.API_RATE_LIMIT = "10/min"
    client = client_with(key)
    answers = [
        client.get(UPLOADS),
        client.post(
            f"{COMPREHENSIVE}?filename=customers_1.ndjson",
            data=ndjson_bytes([customer_row()]),
            content_type="application/x-ndjson",
        ),
        client.post(COMPREHENSIVE, data=b"", content_type="application/x-ndjson"),
        client.get(f"{UPLOADS}{uuid.uuid4()}/"),
        client.delete(UPLOADS),
    ]
    assert [a.status_code for a in answers] == [200, 202, 400, 404, 405]
    assert [a["RateLimit-Remaining"] for a in answers] == ["9", "8", "7", "6", "5"]
    for answer in answers:
        assert answer["RateLimit-Limit"] == "10"
        assert answer["RateLimit-Policy"] == "10;w=60"
        assert 0 < int(answer["RateLimit-Reset"]) <= 60


def test_past_the_limit_a_429_problem_with_retry_after_and_other_keys_unaffected(
    key, other_key, settings, limit_store
):
    """The request after the last one allowed is 429 problem+json; Retry-After is the window's
    Reset; nothing is stored for a refused upload; another key still has its whole quota."""
    settings.API_RATE_LIMIT = "3/min"
    client = client_with(key)
    allowed = [client.get(UPLOADS) for _ in range(3)]
    assert [(a.status_code, a["RateLimit-Remaining"]) for a in allowed] == [
        (200, "2"),
        (200, "1"),
        (200, "0"),
    ]
    refused = client.get(UPLOADS)
    assert refused.status_code == 429
    assert refused["Content-Type"] == PROBLEM
    body = json.loads(refused.content)
    retry_after = int(refused["Retry-After"])
    assert 0 < retry_after <= 60
    assert (body["status"], body["code"], body["title"]) == (429, "throttled", "Too many requests")
    assert body["detail"] == f"Request was throttled. Expected available in {retry_after} seconds."
    assert limit_headers(refused) == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(retry_after),
        "RateLimit-Policy": "3;w=60",
    }
    upload = client.post(
        f"{COMPREHENSIVE}?filename=customers_1.ndjson",
        data=ndjson_bytes([customer_row()]),
        content_type="application/x-ndjson",
    )
    assert upload.status_code == 429
    assert Upload.objects.count() == 0
    other = client_with(other_key).get(UPLOADS)
    assert (other.status_code, other["RateLimit-Remaining"]) == (200, "2")


def test_a_wrong_secret_with_a_real_keys_prefix_is_401_and_spends_none_of_its_requests(
    key, settings, limit_store
):
    """The prefix is public: someone who knows it but not the secret gets 401, without
    headers, and the key's owner still has every request of the window."""
    settings.API_RATE_LIMIT = "2/min"
    scheme, prefix, _secret = key.split("_", 2)
    for _ in range(5):
        wrong = client_with(f"{scheme}_{prefix}_{'0' * 43}").get(UPLOADS)
        assert wrong.status_code == 401
        assert limit_headers(wrong) == dict.fromkeys(HEADERS)
    answer = client_with(key).get(UPLOADS)
    assert (answer.status_code, answer["RateLimit-Remaining"]) == (200, "1")


def test_a_new_window_opens_when_the_period_is_over(key, settings, limit_store):
    """A fixed window: once it ends, the next request opens a new one with the whole quota."""
    settings.API_RATE_LIMIT = "2/2s"
    client = client_with(key)
    statuses = [client.get(UPLOADS).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    time.sleep(2.1)
    answer = client.get(UPLOADS)
    assert (answer.status_code, answer["RateLimit-Remaining"]) == (200, "1")


def test_a_shorter_period_configured_mid_window_starts_a_window_of_its_own(
    key, settings, limit_store
):
    """A window opened under a long period does not hold a key once a shorter one is set."""
    settings.API_RATE_LIMIT = "1/day"
    client = client_with(key)
    assert [client.get(UPLOADS).status_code for _ in range(2)] == [200, 429]
    settings.API_RATE_LIMIT = "1/min"
    answer = client.get(UPLOADS)
    assert answer.status_code == 200
    assert 0 < int(answer["RateLimit-Reset"]) <= 60


def test_an_unreachable_redis_lets_requests_through_without_headers(key, settings):
    """A limiter whose Redis is down does not take the API down with it."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.RATE_LIMIT_STORE = "redis"
    settings.API_RATE_LIMIT = "1/min"
    client = client_with(key)
    answers = [client.get(UPLOADS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert limit_headers(answers[0]) == dict.fromkeys(HEADERS)


# --- exactly the limit, under concurrency ---------------------------------------------------


def _all_at_once(client, count: int) -> None:
    """Run `client` in `count` threads and wait for them all."""
    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_racing_hits_on_fresh_keys_pass_exactly_the_limit_each_with_its_own_count(store, settings):
    """16 threads (each its own connection) hit each of 20 fresh keys at the same moment:
    per key exactly 5 pass, counted 4, 3, 2, 1, 0 remaining, and 11 are refused."""
    if store == "redis" and not settings.REDIS_URL:
        pytest.skip("no Redis configured (CELERY_BROKER_URL or REDIS_URL)")
    redis_url = settings.REDIS_URL if store == "redis" else ""
    rate = Rate(limit=5, period=60)
    keys = [f"test:{uuid.uuid4().hex}" for _ in range(20)]
    start = threading.Barrier(16)
    states: dict[str, list] = {key: [] for key in keys}
    lock = threading.Lock()

    def client() -> None:
        try:
            for key in keys:
                start.wait()
                state = rate_limit_hit(key=key, rate=rate, redis_url=redis_url)
                with lock:
                    states[key].append(state)
        finally:
            connection.close()

    _all_at_once(client, 16)
    for key in keys:
        allowed = sorted(s.remaining for s in states[key] if s.allowed)
        refused = [s for s in states[key] if not s.allowed]
        assert (allowed, len(refused)) == ([0, 1, 2, 3, 4], 11), key
        assert {s.remaining for s in refused} == {0}


@pytest.mark.django_db(transaction=True)
def test_a_hit_begun_before_another_process_opened_the_window_counts_in_that_window():
    """PostgreSQL: a statement that began before another process's statement opened the
    key's window, but reached the row after it, adds to that window (a later statement
    time must not read as a window from the past and start it again)."""
    rate = Rate(limit=5, period=60)
    key = f"test:{uuid.uuid4().hex}"
    late: list = []

    def hit() -> None:
        try:
            late.append(rate_limit_hit(key=key, rate=rate))
        finally:
            connection.close()

    with transaction.atomic(), connection.cursor() as cursor:
        # Holds every writer of the table back until this transaction ends, the way a
        # concurrent insert of the same key holds back the second one.
        cursor.execute("LOCK TABLE core_rate_limit_window IN SHARE MODE")
        racer = threading.Thread(target=hit)
        racer.start()
        _wait_until_blocked(cursor)
        first = rate_limit_hit(key=key, rate=rate)  # opens the window, after `hit` began
    racer.join()
    assert (first.remaining, late[0].remaining) == (4, 3)
    # the late one measured from its own, earlier start: more than the period, told as it
    assert (first.reset, late[0].reset) == (60, 60)


def _wait_until_blocked(cursor) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else one view per transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND query LIKE '%%core_rate_limit_window%%'"
        )
        if cursor.fetchone()[0]:
            return
        time.sleep(0.02)
    pytest.fail("the other hit never waited for the lock")


# --- ... and through real servers ----------------------------------------------------------

LIMIT = 50
THREADS = 16
PER_THREAD = 10


@pytest.fixture(scope="module")
def two_servers(django_db_setup, tmp_path_factory):
    """Two gunicorn servers (2 worker processes each) on the test database, sharing the
    configured store, with a limit of 50 requests a minute."""
    ports = [free_port(), free_port()]
    commands = {
        f"web{n}": [str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", "2"]
        for n, port in enumerate(ports)
    }
    env = {"DATABASE_URL": database_url_of_tests(), "API_RATE_LIMIT": f"{LIMIT}/min"}
    log_dir = tmp_path_factory.mktemp("ratelimit-logs")
    with running_processes(commands, env=env, log_dir=log_dir) as processes:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base in bases:
            wait_ready(base, processes)
        yield bases


def hammer(bases: list[str], key: str) -> list[tuple[float, httpx.Response]]:
    """THREADS clients, started together, each sending PER_THREAD requests alternately to
    each server; the answers with the (monotonic) time each arrived."""
    start = threading.Barrier(THREADS)
    answers: list[tuple[float, httpx.Response]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(headers={"X-API-Key": key}, timeout=60) as http:
            start.wait()
            for i in range(PER_THREAD):
                answer = http.get(bases[(n + i) % len(bases)] + UPLOADS)
                with lock:
                    answers.append((time.monotonic(), answer))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_many_clients_through_two_servers_get_exactly_the_limit(two_servers):
    """16 clients send 160 requests across two servers (four processes): exactly 50 pass, each
    with its own Remaining from 49 to 0; the other 110 are 429 with Retry-After equal to
    RateLimit-Reset; another key then has its whole quota."""
    _, issued = tenant_create(name="hammered")
    _, other = tenant_create(name="bystander")
    timed = hammer(two_servers, issued.raw)
    answers = [answer for _, answer in timed]
    assert Counter(a.status_code for a in answers) == {
        200: LIMIT,
        429: THREADS * PER_THREAD - LIMIT,
    }
    passed = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert sorted(int(a.headers["RateLimit-Remaining"]) for a in passed) == list(range(LIMIT))
    for answer in answers:
        assert answer.headers["RateLimit-Limit"] == str(LIMIT)
        assert answer.headers["RateLimit-Policy"] == f"{LIMIT};w=60"
        assert 0 < int(answer.headers["RateLimit-Reset"]) <= 60
    for answer in refused:
        assert answer.headers["Content-Type"] == PROBLEM
        assert answer.headers["RateLimit-Remaining"] == "0"
        assert answer.headers["Retry-After"] == answer.headers["RateLimit-Reset"]
    window_ends = [at + int(a.headers["RateLimit-Reset"]) for at, a in timed]
    assert max(window_ends) - min(window_ends) <= 2, "one window, the same for every process"
    bystander = httpx.get(two_servers[1] + UPLOADS, headers={"X-API-Key": other.raw})
    assert (bystander.status_code, bystander.headers["RateLimit-Remaining"]) == (
        200,
        str(LIMIT - 1),
    )


# --- the schema ------------------------------------------------------------------------------


def test_the_schema_documents_429_and_the_rate_limit_headers_of_every_keyed_operation(db):
    """Every operation taken with X-API-Key can answer 429 (with Retry-After), and every one of
    its answers but 401 (and tus's 412, before the key is read) carries the RateLimit-*
    headers."""
    paths = json.loads(APIClient().get("/api/v1/schema/").content)["paths"]
    keyed = [
        (f"{method} {path}", operation)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if operation.get("security") == [{"ApiKey": []}]
    ]
    assert len(keyed) >= 10
    for name, operation in keyed:
        responses = operation["responses"]
        assert "Retry-After" in responses["429"]["headers"], name
        for status, response in responses.items():
            headers = set(response.get("headers", {}))
            if status in ("401", "412"):
                assert not headers & set(HEADERS), (name, status)
            else:
                assert set(HEADERS) <= headers, (name, status)


# --- counted in the API key's lookup (the PostgreSQL store) ---------------------------------


def _window_hits(prefix: str, rate: Rate) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT hits FROM core_rate_limit_window WHERE key = %s",
            [window_name(api_key_window(prefix), rate)],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


@pytest.mark.parametrize(
    ("store", "broker", "message"),
    [
        ("", "", None),
        ("memcached", "", "RATE_LIMIT_STORE is postgresql or redis, not 'memcached'"),
        ("redis", "memory://", "RATE_LIMIT_STORE=redis needs REDIS_URL (or a Redis broker)"),
        ("Redis", "redis://127.0.0.1:6379/15", None),
    ],
)
def test_the_limit_store_is_postgresql_unless_set_to_a_configured_redis(store, broker, message):
    """Settings read in a new process: unset, PostgreSQL; an unknown store, or Redis with
    no Redis to count in, stops the process with a message naming the setting."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RATE_LIMIT_STORE")}
    env |= {"CELERY_BROKER_URL": broker, "DJANGO_SETTINGS_MODULE": "main.settings"}
    if store:
        env["RATE_LIMIT_STORE"] = store
    code = "from django.conf import settings; print(settings.RATE_LIMIT_STORE)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    if message is None:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (store.lower() or "postgresql")
    else:
        assert done.returncode != 0
        assert done.stderr.strip().splitlines()[-1] == f"RuntimeError: {message}"


def test_by_default_a_request_is_counted_in_postgresql_even_with_redis_configured(key, settings):
    """The default store counts in the key's lookup, whatever Redis there is: the window's
    row holds the hits, and Redis holds no key of them."""
    assert settings.RATE_LIMIT_STORE == "postgresql"
    settings.API_RATE_LIMIT = "5/min"
    client = client_with(key)
    answers = [client.get(UPLOADS) for _ in range(2)]
    assert [a["RateLimit-Remaining"] for a in answers] == ["4", "3"]
    prefix = key.split("_")[1]
    assert _window_hits(prefix, parse_rate("5/min")) == 2
    if settings.REDIS_URL:
        name = window_name(api_key_window(prefix), parse_rate("5/min"))
        assert redis.Redis.from_url(settings.REDIS_URL).exists(f"ratelimit:{name}") == 0


def test_the_key_lookup_counts_a_valid_key_once_and_a_wrong_one_not_at_all(key):
    """One statement finds the tenant and counts the request: remaining 1, 0, then refused
    with the window's reset and nothing written; the prefix with a wrong secret, a revoked
    key and no rate count nothing."""
    rate = Rate(limit=2, period=60)
    scheme, prefix, _secret = key.split("_", 2)
    found = [tenant_from_api_key_counted(raw_key=key, rate=rate) for _ in range(3)]
    assert {check.tenant.name for check in found} == {"Acme"}
    states = [check.rate_limit for check in found]
    assert [(s.allowed, s.remaining) for s in states] == [(True, 1), (True, 0), (False, 0)]
    assert all(0 < s.reset <= 60 and s.limit == 2 and s.period == 60 for s in states)
    assert _window_hits(prefix, rate) == 2  # the refused request wrote nothing
    wrong = tenant_from_api_key_counted(raw_key=f"{scheme}_{prefix}_{'0' * 43}", rate=rate)
    assert wrong == KeyCheck(None, None)
    uncounted = tenant_from_api_key_counted(raw_key=key, rate=None)
    assert (uncounted.tenant.name, uncounted.rate_limit) == ("Acme", None)
    api_key_revoke(tenant=uncounted.tenant)
    assert tenant_from_api_key_counted(raw_key=key, rate=rate) == KeyCheck(None, None)
    assert _window_hits(prefix, rate) == 2


@pytest.mark.django_db(transaction=True)
def test_racing_requests_of_one_key_counted_in_its_lookup_pass_exactly_the_limit(settings):
    """12 threads (each its own connection) send 3 requests each with one key at once,
    counted by the key's lookup (PostgreSQL store, limit 10): exactly 10 pass, with
    remaining 9 down to 0 once each, and 26 are refused."""
    settings.RATE_LIMIT_STORE = "postgresql"
    raw = tenant_create(name=f"Racing {uuid.uuid4().hex}")[1].raw
    rate = Rate(limit=10, period=60)
    start = threading.Barrier(12)
    states, lock = [], threading.Lock()

    def client() -> None:
        try:
            start.wait()
            for _ in range(3):
                check = tenant_from_api_key_counted(raw_key=raw, rate=rate)
                with lock:
                    states.append(check.rate_limit)
        finally:
            connection.close()

    _all_at_once(client, 12)
    allowed = sorted(s.remaining for s in states if s.allowed)
    assert (allowed, sum(not s.allowed for s in states)) == (list(range(10)), 26)
