"""msgspec's JSON decode errors in words a client can act on. Plain Python, no Django: the
engine's rejects and the API's parsers say the same."""

from __future__ import annotations

import re

_TRUNCATED = "Input data was truncated"
# a \uD800-\uDBFF escape (after an even run of backslashes: not itself escaped) whose next
# six bytes are not a \uDC00-\uDFFF escape
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def decode_error_message(message: str, data: bytes) -> str:
    """The decoder's `message` for `data`, but where it misleads: msgspec calls a high
    surrogate escape that no low one follows "Input data was truncated"."""
    if message == _TRUNCATED and (lone := _LONE_SURROGATE.search(data)) is not None:
        escape = lone.group(1).decode("ascii")
        return f"JSON is malformed: {escape} is half a UTF-16 surrogate pair (byte {lone.start(1)})"
    return message
