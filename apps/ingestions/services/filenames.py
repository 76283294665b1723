"""A file's name as a client gave it, cleaned once for every route that takes one."""

from __future__ import annotations

import os
import re

from apps.core.errors import ApplicationError

# C0 and C1 controls (NUL among them: PostgreSQL text refuses it) and lone surrogates (a
# JSON body may carry one; it has no UTF-8 form).
_NOT_IN_A_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def filename_clean(raw: str) -> str:
    """A file name as a client gave it (query, Content-Disposition, session, tus
    metadata), as it is stored, cleaned as Django cleans a multipart file's name, so that
    every route stores the same name: its last path component (`../a/x.ndjson` is
    `x.ndjson`), without the characters that do not print (a right-to-left override, a
    zero-width space), at most 255 characters with its extension kept; "" for none. A
    control character is a 400 (a multipart one is dropped by Django before it is seen)."""
    if _NOT_IN_A_NAME.search(raw):
        raise ApplicationError(
            f"The file name {raw!r} contains a control character.", code="bad_filename"
        )
    name = raw.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    name = "".join(char for char in name if char.isprintable()).strip()
    if name in (".", ".."):
        return ""
    if len(name) > _LONGEST_NAME:
        stem, extension = os.path.splitext(name)
        extension = extension[:_LONGEST_NAME]
        name = stem[: _LONGEST_NAME - len(extension)] + extension
    return name


_LONGEST_NAME = 255
