"""A request body the test holds back, and a thread with a database connection of its own:
for process while receiving, where the web's side and the worker's run at once."""

from __future__ import annotations

import threading

from django.db import connections

from apps.ingestions.engine.testing import customer_row, ndjson_bytes, uid
from apps.ingestions.models import Upload
from tests.conftest import wait_for


def customers_bytes(count: int, label: str = "c") -> bytes:
    """`count` customers as NDJSON, their ids and emails made from `label`."""
    rows = [
        customer_row(customer_id=uid(f"{label}-{n}"), email=f"{label}{n}@example.com")
        for n in range(count)
    ]
    return ndjson_bytes(rows)


class GatedBody:
    """A request body that hands out `data` up to `open_until` bytes, then blocks until the
    test opens more (`release`) or breaks it (`fail`: the client went away)."""

    def __init__(self, data: bytes, open_until: int):
        self.data, self.position, self.open_until = data, 0, open_until
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self.waiting = threading.Event()  # set while a read waits for the gate

    def read(self, size: int = -1) -> bytes:
        """As a web server's body reads: all `size` bytes asked for (fewer only at the
        end), waiting for the gate to let them through."""
        with self._changed:
            left = len(self.data) - self.position
            want = left if size is None or size < 0 else min(size, left)
            while self.position + want > self.open_until:
                if self._error is not None:
                    raise self._error
                self.waiting.set()
                self._changed.wait(0.05)
            self.waiting.clear()
            if self._error is not None:
                raise self._error
            piece = self.data[self.position : self.position + want]
            self.position += want
            return piece

    def open_more(self, count: int) -> None:
        with self._changed:
            self.open_until += count
            self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self.open_until = len(self.data)
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()


def in_thread(target) -> tuple[threading.Thread, dict]:
    """Run `target` in a thread with its own database connection; its result or error in
    the returned dict once joined."""
    out: dict = {}

    def run():
        try:
            out["result"] = target()
        except BaseException as exc:  # the test asserts on it
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def worker_loading(upload_id):
    """`upload_run` in a thread, returned once it has loaded rows (not committed them)."""
    from apps.ingestions.services import upload_run

    worker, worked = in_thread(lambda: upload_run(upload_id=upload_id))
    wait_for(lambda: Upload.objects.get(id=upload_id).rows_done > 0, timeout=30)
    return worker, worked
