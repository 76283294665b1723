"""Ids from requests: a UUID is read only in its canonical ASCII form.

`uuid.UUID()` also takes braces, a `urn:uuid:` prefix, no hyphens, and any Unicode digit
(`int()` reads Arabic-Indic or fullwidth digits), so one resource would answer to many
spellings of its id, some of them not ASCII at all.
"""

from __future__ import annotations

import re
import uuid

_CANONICAL = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE
).fullmatch


def uuid_or_none(value: object) -> uuid.UUID | None:
    """`value` as a UUID when it is one (a UUID, or its 36-character hyphenated text in
    either case), else None."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and _CANONICAL(value):
        return uuid.UUID(value)
    return None
