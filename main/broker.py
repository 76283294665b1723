"""The brokers' transport settings: Redis's options, and the embedded broker's transport,
kombu's filesystem transport with each message written whole before a worker can see it.

kombu writes a message file in place, in the folder workers poll: a worker can move it
away and read it before its bytes are there, and an empty message stops the worker
("Unrecoverable error: JSONDecodeError"). Seen with a few web processes sending tasks
while a worker polls every 0.1 s. Here a message is written under a name no queue reads
(it starts with a dot) and renamed into place once written: a rename within one folder is
atomic, so a worker sees the whole message or none of it.

`settings` makes `filesystem://` mean this transport (kombu's `TRANSPORT_ALIASES`).
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

REDIS_TRANSPORT_OPTIONS = {
    # Longer than any healthy upload takes: an unacked task is redelivered after this, and
    # the per-upload lock makes a redelivery wait rather than run twice.
    "visibility_timeout": 25 * 3600,
    # A broker that takes the connection and then never answers: a send gives up after
    # this long (the upload stays queued and is resent) rather than hang its request.
    "socket_connect_timeout": 5,
    "socket_timeout": 5,
}


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
