"""Kept-alive connections spread evenly over gunicorn's worker processes
(`main.web_balance`): the table the master and its workers share, and a real `gunicorn
main.wsgi` with two workers and eight clients that keep their connections."""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import signal
import time
from collections.abc import Iterator

import psutil
import pytest

from main.web_balance import ConnectionTable
from scripts.stack import BIN, free_port, running_processes, wait_ready
from tests.factories import database_url_of_tests


def test_a_worker_counts_its_connections_against_the_worker_with_the_fewest():
    """Rows reserved by the master count once their worker takes them; each worker's
    excess is its connections less the fewest any other worker has; a freed row no longer
    counts, and is reserved again."""
    table = ConnectionTable(slots=3)
    first, second, third = table.reserve(), table.reserve(), table.reserve()
    assert (first, second, third) == (0, 1, 2)
    assert table.reserve() is None  # all taken: a worker without a row is left as it was
    pid = os.fork()
    if pid == 0:  # the second worker: three connections, in the memory both processes share
        table.take(second)
        for _ in range(3):
            table.opened()
        os._exit(0)
    os.waitpid(pid, 0)
    table.take(first)
    assert table.excess() == 0  # fewer than the other (the third row is not taken yet)
    for _ in range(5):
        table.opened()
    table.closed()
    assert table.excess() == 1  # 4 against 3
    table.release(second)  # its worker exited
    assert table.excess() == 0  # alone
    assert table.reserve() == second


def test_a_worker_without_a_row_keeps_connections_as_before():
    """More workers than rows (or gunicorn run without the project's config): the worker
    never leaves a connection to the others."""
    table = ConnectionTable(slots=1)
    table.take(None)
    table.opened()
    assert table.excess() == 0


@contextlib.contextmanager
def _gunicorn(tmp_path, workers: int) -> Iterator[tuple[int, psutil.Process]]:
    port = free_port()
    command = [
        *(str(BIN / "gunicorn"), "main.wsgi", "--bind", f"127.0.0.1:{port}"),
        *("--workers", str(workers)),
    ]
    env = {"DATABASE_URL": database_url_of_tests()}
    with running_processes({"web": command}, env=env, log_dir=tmp_path) as processes:
        wait_ready(f"http://127.0.0.1:{port}", processes)
        master = psutil.Process(processes["web"].pid)
        _wait_for(lambda: len(master.children()) == workers)
        _wait_accepting(master, port, workers)
        yield port, master


def _wait_accepting(master: psutil.Process, port: int, workers: int) -> None:
    """Until every worker has served a connection (each loads the service first)."""
    served: set[int] = set()

    def one() -> bool:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            client.request("GET", "/healthz")
            client.getresponse().read()
            spread = _connections_by_worker(master, port)
            served.update(pid for pid, count in spread.items() if count)
        finally:
            client.close()
        return len(served) == workers

    _wait_for(one)


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _connections_by_worker(master: psutil.Process, port: int) -> dict[int, int]:
    """Open connections to `port` per worker process (by pid)."""
    counts = collections.Counter()
    for worker in master.children():
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED:
                counts[worker.pid] += 1
    return {worker.pid: counts[worker.pid] for worker in master.children()}


def _rounds(clients: list[http.client.HTTPConnection], rounds: int) -> list[str]:
    """Each client sends `rounds` requests in turn (a client told to close opens a new
    connection for its next request, as HTTP clients do); the `Connection` headers."""
    said = []
    for _ in range(rounds):
        for client in clients:
            client.request("GET", "/healthz")
            response = client.getresponse()
            response.read()
            assert response.status == 200
            said.append(response.getheader("Connection"))
            if response.getheader("Connection") == "close":
                client.close()
    return said


@pytest.mark.slow
def test_clients_that_keep_their_connections_are_spread_evenly_over_the_workers(tmp_path):
    """Eight clients opening their connections at once, then sending request after request
    on them, end up four on each of two workers; and again after one worker is killed and
    gunicorn starts another (its row freed, the new one's reserved)."""
    with _gunicorn(tmp_path, workers=2) as (port, master):
        clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=15) for _ in range(8)]
        for client in clients:
            client.connect()  # all eight at once, before any answer
        try:
            said = _rounds(clients, rounds=5)
            _rounds(clients, rounds=1)  # a client moved in the last round is connected now
            spread = _connections_by_worker(master, port)
            assert sorted(spread.values()) == [4, 4], spread
            assert said.count("close") <= 8, said  # moved, not closed again and again

            victim = max(spread, key=spread.get)
            os.kill(victim, signal.SIGKILL)
            _wait_for(lambda: victim not in {w.pid for w in master.children()})
            _wait_for(lambda: len(master.children()) == 2)
            for client in clients:
                client.close()
            _wait_for(lambda: sum(_connections_by_worker(master, port).values()) == 0)
            _wait_accepting(master, port, 2)  # the new worker has loaded the service
            for client in clients:
                client.connect()
            _rounds(clients, rounds=5)
            _rounds(clients, rounds=1)
            spread = _connections_by_worker(master, port)
            assert sorted(spread.values()) == [4, 4], spread
        finally:
            for client in clients:
                client.close()
