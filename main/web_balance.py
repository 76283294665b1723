"""Kept-alive connections spread evenly over gunicorn's worker processes.

Every worker waits on the one listening socket, and whichever is first back in its event
loop accepts the next connection. Clients that keep their connection open (the project's
own client, the live bench's eight) then stay where they landed: the live bench found 6 or
7 of its 8 connections on one of the two processes, whose requests waited behind each
other's while the other process had little to do. Both processes get the same CPU, so each
answers about as many requests a second: a request of the crowded one waited three times as
long.

`ConnectionTable` is a small table in memory shared by the master and its workers (created
by the master before it forks them): each worker's pid and its open connections. With it,

- a worker with more connections than another leaves a new one to the others (it stops
  accepting for `WAIT` seconds, for at most `PATIENCE` in a row, so that a process that is
  stuck, or gone and not yet reaped, never holds a client back for longer);
- after an answer, a worker with two or more connections more than another answers
  `Connection: close` (`must_close`): the client opens a new connection, which goes to the
  process with fewer.

The master reserves a worker's row before forking it (`pre_fork`), the worker takes it once
it accepts (`ProblemGeventWorker.run`), and the master frees it when the worker exits
(`child_exit`). Each worker writes only its own row, one aligned machine word at a time,
so nothing is locked. A worker without a row (more workers than `SLOTS`, or gunicorn run
without this project's `gunicorn.conf.py`) accepts and keeps connections as before.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time

from gevent.server import StreamServer

SLOTS = 128  # rows: worker processes of one master at once
WAIT = 0.002  # seconds between looks while another worker has fewer connections
PATIENCE = 0.05  # seconds at most a worker leaves pending connections to the others
_FREE, _RESERVED = 0, -1  # the pid column's other values


class ConnectionTable:
    """Each worker's pid and open connections, in memory the master's forks share."""

    def __init__(self, slots: int = SLOTS):
        self._memory = mmap.mmap(-1, 2 * slots * ctypes.sizeof(ctypes.c_long))
        self._cells = (ctypes.c_long * (2 * slots)).from_buffer(self._memory)
        self._layout = struct.Struct(f"{2 * slots}l")
        self.slots = slots
        self.slot: int | None = None  # this worker's row, once taken

    # the master's side

    def reserve(self) -> int | None:
        """A free row for a worker about to be forked, or None when all are taken."""
        for slot in range(self.slots):
            if self._cells[2 * slot] == _FREE:
                self._cells[2 * slot] = _RESERVED
                self._cells[2 * slot + 1] = 0
                return slot
        return None

    def release(self, slot: int | None) -> None:
        """The row of a worker that has exited is free again."""
        if slot is not None:
            self._cells[2 * slot + 1] = 0
            self._cells[2 * slot] = _FREE

    # a worker's side

    def take(self, slot: int | None) -> None:
        """This process is the worker of `slot` (reserved for it), and accepting now."""
        if slot is None:
            return
        self._cells[2 * slot + 1] = 0
        self._cells[2 * slot] = os.getpid()
        self.slot = slot

    def opened(self) -> None:
        if self.slot is not None:
            self._cells[2 * self.slot + 1] += 1

    def closed(self) -> None:
        if self.slot is not None:
            self._cells[2 * self.slot + 1] -= 1

    def excess(self) -> int:
        """This worker's connections less those of the worker with the fewest (0 when it
        has the fewest, or is alone, or has no row)."""
        if self.slot is None:
            return 0
        cells = self._layout.unpack_from(self._memory)
        mine = cells[2 * self.slot + 1]
        fewest = mine
        for slot, pid in enumerate(cells[::2]):
            if pid > 0 and slot != self.slot:
                fewest = min(fewest, cells[2 * slot + 1])
        return mine - fewest


_table: ConnectionTable | None = None


def connection_table() -> ConnectionTable:
    """The table of this master and its workers: made by the master at its first call
    (`pre_fork`), inherited by every worker it forks after that."""
    global _table
    if _table is None:
        _table = ConnectionTable()
    return _table


def must_close() -> bool:
    """Whether the answer under way should close its connection: this worker has two or
    more connections more than another (moving one makes them closer)."""
    return _table is not None and _table.excess() > 1


class BalancedServer(StreamServer):
    """gevent's server, leaving a connection to the other workers while this one has more
    connections than one of them (for at most `PATIENCE` in a row)."""

    _deferring_since: float | None = None
    _deferred_at = 0.0

    def _do_read(self):
        if _table is not None and _table.excess() > 0:
            now = time.monotonic()
            if self._deferring_since is None or now - self._deferred_at > 4 * WAIT:
                self._deferring_since = now  # a new connection waiting, not the same one
            self._deferred_at = now
            if now - self._deferring_since < PATIENCE:
                self.stop_accepting()
                self._timer = self.loop.timer(WAIT)
                self._timer.start(self._start_accepting_if_started)
                return
        self._deferring_since = None
        super()._do_read()
