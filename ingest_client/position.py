"""Reading a file for `stream`, and where a stream has got to in it: with `--position PATH`
that is kept in a small JSON file, so that a stream started again goes on from there
instead of sending the whole file again.

The position passes a line only once the server has answered for it (accepted or
rejected) and for every line before it. A stream killed (SIGKILL, a crash), or stopped
with records it could not send, starts again at the first line not answered for: no line
is skipped. Lines answered after the last save (once a second, and at the end) are sent
again; the merge's upsert takes them as the same rows.

A file is known by its device, inode and its first bytes (up to `HEAD`, so that a new
file given an old inode is told apart). Replaced or shorter than the position when the
stream starts, it is read from its start, as `tail -F` reads a file replaced under it;
lines left unread in a file rotated away while no stream ran are not read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEAD = 4096  # bytes of a file's start that tell it apart


@dataclass(frozen=True)
class Mark:
    """Where a line read ends: the file (device, inode, its first bytes), the byte offset
    and the number of lines read up to it."""

    device: int
    inode: int
    offset: int
    line: int
    head: bytes  # the file's first bytes read, up to HEAD

    def head_sha256(self) -> str:
        return hashlib.sha256(self.head[: min(self.offset, HEAD)]).hexdigest()


@dataclass(frozen=True)
class Start:
    """A saved `Mark`, its head as a sha256."""

    device: int
    inode: int
    offset: int
    line: int
    head_sha256: str


class FileReader:
    """The lines of the file at `path` from `start` (a `Mark`, when it is still the same
    file) or from its beginning; with `follow`, as the file grows (like `tail -F`, reopened
    from its start when replaced or truncated) until `stop` is set. `mark` is where the
    line last given ends. A line is given once its newline is written; at the end of a file
    read once, the last line without one too; when following, a partial line left at
    `stop` only with `partial_at_stop` (with a position it waits for the next stream)."""

    def __init__(
        self,
        path: Path,
        *,
        stop: threading.Event,
        follow: bool = True,
        start: Start | None = None,
        partial_at_stop: bool = True,
        interval: float = 0.1,
        note: Callable[[str], None] | None = None,
    ):
        self.path, self.stop, self.follow, self.start = path, stop, follow, start
        self.partial_at_stop, self.interval = partial_at_stop, interval
        self.note = note or (lambda text: None)
        self.mark: Mark | None = None
        self.resumed = False  # the start was this file's: reading went on from it

    def lines(self) -> Iterator[bytes]:  # long: one loop over open, read, wait, reopen
        handle: BinaryIO | None = None
        partial = b""
        try:
            while not self.stop.is_set():
                if handle is None:
                    handle = self._open()
                    if handle is None:
                        if not self.follow:
                            raise FileNotFoundError(f"No such file: '{self.path}'")
                        self.stop.wait(self.interval)
                        continue
                chunk = handle.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith(b"\n"):
                        yield self._read(partial)
                        partial = b""
                    continue
                if not self.follow:
                    break
                if _replaced(self.path, handle):
                    handle.close()
                    handle, partial = None, b""
                    continue
                self.stop.wait(self.interval)
            if partial and (self.partial_at_stop or not self.follow):
                yield self._read(partial)
        finally:
            if handle is not None:
                handle.close()

    def _open(self) -> BinaryIO | None:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        info = os.fstat(handle.fileno())
        start, self.start = self.start, None  # a file opened again is read from its start
        head = handle.read(min(start.offset, HEAD)) if start else b""
        if start and _same(start, info, head):
            handle.seek(start.offset)
            self.mark = Mark(info.st_dev, info.st_ino, start.offset, start.line, head)
            self.resumed = True
            self.note(f"going on after line {start.line} of {self.path}")
        else:
            if start:
                self.note(
                    f"{self.path} was replaced or truncated since its position was saved: "
                    "reading it from its start"
                )
            handle.seek(0)
            self.mark = Mark(info.st_dev, info.st_ino, 0, 0, b"")
        return handle

    def _read(self, line: bytes) -> bytes:
        mark = self.mark
        head = mark.head
        if len(head) < HEAD:
            head += line[: HEAD - len(head)]
        self.mark = Mark(mark.device, mark.inode, mark.offset + len(line), mark.line + 1, head)
        return line


def _same(start: Start, info: os.stat_result, head: bytes) -> bool:
    return (
        (info.st_dev, info.st_ino) == (start.device, start.inode)
        and info.st_size >= start.offset
        and hashlib.sha256(head).hexdigest() == start.head_sha256
    )


def _replaced(path: Path, handle: BinaryIO) -> bool:
    """The file at `path` is another one than `handle`'s, or shorter than what was read."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False  # rotated away, not back yet: keep the old one until it is
    mine = os.fstat(handle.fileno())
    return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev) or now.st_size < handle.tell()


class Position:
    """The position file: `load` reads it, `read` notes each line's end and how many
    records were queued by then, `settle` moves the position past the lines answered for,
    `save` writes it (atomically: a new file renamed over the old one).

    `settle` reads the client's counts: records are sent in the order queued (one record
    type, one sender thread), so while none has failed, the first `sent` records queued
    are exactly the ones answered for. Once a batch has failed the position stays where
    it is: a stream started again sends from the first line not answered for."""

    def __init__(self, path: Path, file: Path):
        self.path, self.file = path, file
        self.saved: Mark | Start | None = None
        self.settled: Mark | Start | None = None
        self._marks: deque[tuple[int, Mark]] = deque()

    def load(self) -> Start | None:
        """The mark saved, or None when there is no position file yet. Raises ValueError
        for a file that is not a position, or is the position of another file."""
        try:
            data = json.loads(self.path.read_bytes())
            mark = Start(*(data[k] for k in ("device", "inode", "offset", "line", "head_sha256")))
            if not all(type(v) is int and v >= 0 for v in (mark.offset, mark.line)):
                raise ValueError("offset and line must be counts")
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path} is not a position file ({exc})") from None
        if data.get("file") != str(self.file.resolve()):
            other = data.get("file")
            raise ValueError(f"{self.path} is the position of {other}, not of {self.file}")
        self.saved = self.settled = mark
        return mark

    def read(self, queued: int, mark: Mark) -> None:
        self._marks.append((queued, mark))

    def settle(self, sent: int, failed: int) -> None:
        """`sent` and `failed` as the client counts them, `sent` read first."""
        if failed:
            return
        while self._marks and self._marks[0][0] <= sent:
            self.settled = self._marks.popleft()[1]

    def save(self) -> None:
        mark = self.settled
        if not isinstance(mark, Mark) or mark == self.saved:
            return
        data = {
            "file": str(self.file.resolve()),
            "device": mark.device,
            "inode": mark.inode,
            "offset": mark.offset,
            "line": mark.line,
            "head_sha256": mark.head_sha256(),
        }
        new = self.path.with_name(f".{self.path.name}.new")
        with new.open("w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.replace(new, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                new.unlink()
        self.saved = mark
