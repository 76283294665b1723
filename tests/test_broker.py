"""The embedded broker (`main/broker.py`): a worker polling the queue folder never takes a
message before it is whole. kombu's own filesystem transport wrote messages in place, and
a worker that took one half-written stopped ("Unrecoverable error: JSONDecodeError")."""

from __future__ import annotations

import threading
from queue import Empty

import pytest
from kombu import Connection

from main.broker import Transport

MESSAGES = 300
PAYLOAD = "x" * 200_000  # big enough that writing one takes a while


def _connection(folder, transport):
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder.parent / "processed"),
        "control_folder": str(folder.parent / "control"),
        "store_processed": False,
        "polling_interval": 0,
    }
    (folder.parent / "processed").mkdir(exist_ok=True)
    return Connection(transport=transport, transport_options=options)


def _race(tmp_path, transport) -> tuple[int, list[Exception]]:
    """A writer putting MESSAGES big messages while a reader takes them as fast as it can:
    (messages read whole, errors)."""
    folder = tmp_path / "queue"
    folder.mkdir()
    errors: list[Exception] = []
    read = 0
    done = threading.Event()

    def write():
        with _connection(folder, transport) as conn:
            queue = conn.SimpleQueue("race")
            for n in range(MESSAGES):
                queue.put({"n": n, "payload": PAYLOAD})
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    with _connection(folder, transport) as conn:
        channel = conn.default_channel
        while read < MESSAGES:
            try:
                message = channel._get("race")
            except Empty:
                if done.is_set() and not any(folder.iterdir()):
                    break
                continue
            except Exception as exc:  # noqa: BLE001 - what a worker would die of
                errors.append(exc)
                continue
            assert message["body"]
            read += 1
    writer.join()
    return read, errors


def test_a_polling_worker_only_ever_takes_whole_messages(tmp_path):
    read, errors = _race(tmp_path, Transport)
    assert errors == []
    assert read == MESSAGES


def test_the_race_is_real_with_kombus_own_transport(tmp_path):
    """The same race against kombu's transport as shipped: some message is taken before it
    is written (if this ever passes with no error, kombu fixed it and main/broker.py can
    go). Not a requirement on kombu: skipped when the race did not show this time."""
    from kombu.transport import filesystem

    read, errors = _race(tmp_path, filesystem.Transport)
    if not errors:
        pytest.skip("the race did not show this run")
    assert any(type(e).__name__ == "JSONDecodeError" for e in errors)
