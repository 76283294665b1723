"""What one `load_upload` call works on (`Job`), and the totals of what it staged (`Totals`).

Shared by both ways through a load: the whole-file path (`load`) and the pipelined one
(`pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from apps.ingestions.engine.keys import ParentLocks
from apps.ingestions.engine.parse import Chunk, parse_chunks
from apps.ingestions.engine.reader import ByteStream, read_lines
from apps.ingestions.engine.records import RecordSpec
from apps.ingestions.engine.rules import Rules


@dataclass(frozen=True)
class Job:
    """One file of one record type for one tenant, and how to load it."""

    spec: RecordSpec
    stream: BinaryIO
    tenant_id: str
    upload_id: str
    now: datetime
    max_line_bytes: int
    max_decompressed_bytes: int
    progress: Callable[[int, int], None] | None
    setwise_key_checks: bool = True
    parents: ParentLocks | None = None  # set once the tenant's merge lock is held
    held: ParentLocks | None = None  # the same, for the type's pending table
    parents_coming: Callable[[], bool] | None = None
    rules: Rules | None = None  # the tenant's, for this type

    def read(self) -> tuple[ByteStream, Iterator[Chunk]]:
        """The byte source (for its counters) and the file's chunks of COPY text."""
        source = ByteStream(self.stream, max_bytes=self.max_decompressed_bytes)
        lines = read_lines(source, max_line_bytes=self.max_line_bytes)
        report = None
        if self.progress is not None:
            progress = self.progress

            def report(rows: int) -> None:
                progress(source.bytes_in, rows)

        return source, parse_chunks(self.spec, lines, progress=report, rules=self.rules)


@dataclass
class Totals:
    """Rows staged so far (non-blank lines), how many of them were rejected, how many warned."""

    rows: int = 0
    rejected: int = 0
    warned: int = 0
