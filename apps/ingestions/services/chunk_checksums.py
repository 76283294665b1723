"""A tus chunk's own checksum (`Upload-Checksum: <algorithm> <base64 digest>`): parsed,
and the error of a chunk whose bytes do not match it (tus answers 460)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from apps.core.errors import ApplicationError

CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


class ChecksumMismatchError(ApplicationError):
    """A chunk's bytes do not match its Upload-Checksum (tus answers 460)."""

    status = 460
    code = "checksum_mismatch"
    title = "Checksum mismatch"


@dataclass(frozen=True)
class ChunkChecksum:
    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, header: str) -> ChunkChecksum:
        """`Upload-Checksum: <algorithm> <base64 digest>`."""
        algorithm, _, encoded = header.strip().partition(" ")
        algorithm = algorithm.lower()
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise ApplicationError(
                f"Unsupported checksum algorithm {algorithm!r}; use one of "
                f"{', '.join(CHECKSUM_ALGORITHMS)}.",
                code="unsupported_checksum",
            )
        size = hashlib.new(algorithm).digest_size
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            digest = b""
        if len(digest) != size:  # none, or one no chunk could match
            raise ApplicationError(
                f"Upload-Checksum must be `<algorithm> <base64 digest>`, the digest of "
                f"{algorithm} being {size} bytes.",
                code="bad_checksum",
            )
        return cls(algorithm=algorithm, digest=digest)
