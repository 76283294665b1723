"""Reading a file for `stream`, and where a stream has got to in it: with `--position PATH`
that is kept in a small JSON file, so that a stream started again goes on from there
instead of sending the whole file again.

The position passes a line only once the server has answered for it (accepted or
rejected) and for every line before it. A stream killed (SIGKILL, a crash), or stopped
with records it could not send, starts again at the first line not answered for: no line
is skipped. Lines answered after the last save (once a second, and at the end) are sent
again; the merge's upsert takes them as the same rows.

A file is known by its path as given, device, inode, its first bytes and those just
before the position (up to `HEAD` each: a new file given an old inode, or a file rewritten
in place, is told apart). Replaced, rewritten or shorter than the position when the
stream starts, it is read from its start, as `tail -F` reads a file replaced under it:
lines of a file rotated away that the server had not answered for are never sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEAD = 4096  # bytes of a file's start (and before a position) that tell it apart
_SAVED = ("device", "inode", "offset", "line", "head_sha256", "tail_sha256")


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
    """A saved `Mark`: its head, and the bytes just before its offset (up to HEAD), as
    sha256s."""

    device: int
    inode: int
    offset: int
    line: int
    head_sha256: str
    tail_sha256: str


def _whole_json(data: bytes) -> bool:
    """Whether `data` is one whole JSON value (numbers are not converted: a long one is
    no error here; a value nested too deeply to tell is taken as whole)."""
    try:
        json.loads(data, parse_int=len, parse_float=len, parse_constant=len)
    except RecursionError:
        return True
    except ValueError:
        return False
    return True


class FileReader:
    """The lines of the file at `path` from `start` (a `Start`, when it is still the same
    file and ends a line) or from its beginning; with `follow`, as the file grows (like
    `tail -F`: when it is replaced or truncated, what the old one still held is read, then
    the new one from its start) until `stop` is set. A line is given once its newline is
    written, or when no more can come: at the end of a file read once, of a file replaced,
    and, with `partial_at_stop`, at `stop` (`take_partial` after an exception). A pipe is
    read as it comes.

    `number` is the number, in its file, of the line last given; `mark` is where the last
    line given with its newline ends: a line given without one is sent, and the position
    does not pass it (it is sent again, whole, once the file has grown)."""

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
        self.number = 0
        self._file: tuple[int, int] | None = None  # device and inode of the file open
        self._end, self._end_line, self._head = 0, 0, b""  # of `mark`, built when asked
        self.partial = b""  # read, its newline not written yet
        self.resumed = False  # the start was this file's: reading went on from it
        self._handle: BinaryIO | None = None
        self._offset = 0  # bytes read of the open file (a pipe cannot tell)

    def lines(self) -> Iterator[bytes]:
        try:
            while not self.stop.is_set():
                if self._handle is None and not self._open():
                    if not self.follow:
                        raise FileNotFoundError(f"No such file: '{self.path}'")
                    self.stop.wait(self.interval)
                    continue
                line = self._readline()
                if line is not None:
                    yield line
                    continue
                if not self.follow:
                    break
                replaced = _replaced(self.path, self._handle, self._offset, self._head)
                if replaced == "another":
                    # what was written to the old file until it was replaced, then the new
                    while (line := self._readline()) is not None:
                        yield line
                    if self.partial:  # nothing more comes to the old file's last line
                        yield self._give(self.partial)
                if replaced:
                    # rewritten in place, what follows the old offset is the new content's
                    # middle (it was read as lines: a garbled one, the rest lost); the old
                    # content's last line without its newline is gone with it
                    if self.partial:
                        self.note(
                            f"{self.path.name} was rewritten in place: the last "
                            f"{len(self.partial):,} bytes read, a line without its newline, "
                            "are gone with it"
                        )
                        self.partial = b""
                    self._close()
                    continue
                self.stop.wait(self.interval)
            if self.partial and not self.follow:  # the end of a file read once: a line
                yield self._give(self.partial)
            elif (line := self.take_partial()) is not None:
                yield line
        finally:
            self._close()

    @property
    def mark(self) -> Mark | None:
        """Where the last line given with its newline ends (None before a file is open)."""
        if self._file is None:
            return None
        return Mark(*self._file, self._end, self._end_line, self._head)

    def take_partial(self) -> bytes | None:
        """The partial line that `lines` would have given at `stop`, when it ended on an
        exception instead (Ctrl-C); None when there is none, or none to give. Followed, it
        is given only when it is a whole JSON value (a last record written without its
        newline): a writer stopped mid-line has written half a record, whose reject would
        be all it gave. That is said, and it is kept."""
        if not (self.partial and self.partial_at_stop):
            return None
        if self.follow and not _whole_json(self.partial):
            self.note(
                f"{self.path.name}: the last {len(self.partial):,} bytes read have no newline "
                "yet and are not a whole record (a writer stopped mid-line?): not sent"
            )
            return None
        return self._give(self.partial)

    def _readline(self) -> bytes | None:
        """The next whole line of the open file, or None at its end for now."""
        while chunk := self._handle.readline():
            self._offset += len(chunk)
            self.partial += chunk
            if chunk.endswith(b"\n"):
                return self._give(self.partial)
        return None

    def _give(self, line: bytes) -> bytes:
        self.partial = b""
        self.number += 1
        if line.endswith(b"\n"):
            self._end += len(line)
            self._end_line = self.number
            if len(self._head) < HEAD:
                self._head = (self._head + line)[:HEAD]
        return line

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        info = os.fstat(handle.fileno())
        start, self.start = self.start, None  # a file opened again is read from its start
        head = None
        if start is not None and not handle.seekable():
            self.note(f"{self.path} is a pipe: read as it comes, not from its position")
        elif start is not None:
            head = _head_of(start, info, handle)
            if head is None:
                self.note(
                    f"{self.path} was replaced or truncated since its position was saved: "
                    "reading it from its start"
                )
                handle.seek(0)
            else:
                self.note(f"going on after line {start.line} of {self.path}")
        offset, line = (start.offset, start.line) if head is not None else (0, 0)
        self._file, self._head = (info.st_dev, info.st_ino), head or b""
        self.number = self._end_line = line
        self._offset = self._end = offset
        self.resumed = head is not None
        self._handle, self.partial = handle, b""
        return True

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _head_of(start: Start, info: os.stat_result, handle: BinaryIO) -> bytes | None:
    """The file's first bytes, read, and the file left at `start`'s offset, when it is the
    file of `start` (its first bytes and those before the offset as they were) and a line
    ends there; else None. A file rewritten in place but for its start is so told apart."""
    if (info.st_dev, info.st_ino) != (start.device, start.inode) or info.st_size < start.offset:
        return None
    head = handle.read(min(start.offset, HEAD))
    if hashlib.sha256(head).hexdigest() != start.head_sha256:
        return None
    handle.seek(max(0, start.offset - HEAD))
    tail = handle.read(min(start.offset, HEAD))
    if hashlib.sha256(tail).hexdigest() != start.tail_sha256:
        return None
    if start.offset and not tail.endswith(b"\n"):  # a hand-edited offset, inside a line
        return None
    return head


def _tail_sha256(path: Path, mark: Mark) -> str:
    """The sha256 of the bytes just before `mark`'s offset (up to HEAD), read from the file
    at `path`; empty (matching nothing) once that is another file."""
    try:  # not blocking: a pipe's open would wait for a writer
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            info = os.fstat(handle.fileno())
            if (info.st_dev, info.st_ino) != (mark.device, mark.inode):
                return ""
            handle.seek(max(0, mark.offset - HEAD))
            return hashlib.sha256(handle.read(min(mark.offset, HEAD))).hexdigest()
    except OSError:
        return ""


def _replaced(path: Path, handle: BinaryIO, offset: int, head: bytes) -> str:
    """How the file at `path` changed: "another" (not `handle`'s), "rewritten" (`handle`'s
    own, shorter than what was read, or its first bytes no longer `head`: truncated in
    place and written again between two looks, as copytruncate and a busy writer leave
    it), or "" (as it was)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return ""  # rotated away, not back yet: keep the old one until it is
    mine = os.fstat(handle.fileno())
    if (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
        return "another"
    if not stat.S_ISREG(now.st_mode):
        return ""
    if now.st_size < offset or (head and os.pread(handle.fileno(), len(head), 0) != head):
        return "rewritten"
    return ""


class Position:
    """The position file: `load` reads it, `read` notes each line's end and how many
    records were queued by then, `settle` moves the position past the lines answered for,
    `save` writes it (atomically: a new file renamed over the old one).

    `settle` reads the client's counts: records are sent in the order queued (one record
    type, one sender thread), so while none has failed, the first `sent` records queued
    are exactly the ones answered for. Once a batch has failed the position stays where
    it is (and no more marks are kept): a stream started again sends from the first line
    not answered for.

    One stream at a time uses a position: `lock` takes `PATH.lock` (and so also finds, at
    the start, a folder the position cannot be written to)."""

    def __init__(self, path: Path, file: Path):
        self.path, self.file = path, file
        self.name = os.path.abspath(file)  # as given: a symlink pointed elsewhere is replaced
        self.saved: Mark | Start | None = None
        self.settled: Mark | Start | None = None
        self._marks: deque[tuple[int, Mark]] = deque()
        self._frozen = False  # a batch failed: the position stays, no mark is kept
        self._settling = threading.Lock()  # the sender's thread, and the end's
        self._lock = None

    def load(self) -> Start | None:
        """The mark saved, or None when there is no position file yet. Raises ValueError
        for a file that is not a position, or is the position of another file."""
        try:
            data = json.loads(self.path.read_bytes())
            mark = Start(*(data[k] for k in _SAVED))
            if not all(type(v) is int and v >= 0 for v in (mark.offset, mark.line)):
                raise ValueError("offset and line must be counts")
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path} is not a position file ({exc})") from None
        if data.get("file") != self.name:
            other = data.get("file")
            raise ValueError(f"{self.path} is the position of {other}, not of {self.file}")
        self.saved = self.settled = mark
        return mark

    def lock(self) -> None:
        """Take the position for this process, until `release` (or its exit). Raises
        ValueError when another stream has it, OSError when its folder cannot be written
        to."""
        self._lock = open(f"{self.path}.lock", "a")  # noqa: SIM115 - held until `release`
        try:
            import fcntl
        except ImportError:  # not POSIX: not locked
            return
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise ValueError(f"another stream is using the position {self.path}") from None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def read(self, queued: int, mark: Mark) -> None:
        if not self._frozen:
            self._marks.append((queued, mark))

    def settle(self, sent: int, failed: int) -> None:
        """`sent` and `failed` as the client counts them, `sent` read first."""
        with self._settling:
            if failed:
                self._frozen = True
                self._marks.clear()
                return
            while self._marks and self._marks[0][0] <= sent:
                self.settled = self._marks.popleft()[1]

    def save(self) -> None:
        mark = self.settled
        if not isinstance(mark, Mark) or mark == self.saved:
            return
        data = {
            "file": self.name,
            "device": mark.device,
            "inode": mark.inode,
            "offset": mark.offset,
            "line": mark.line,
            "head_sha256": mark.head_sha256(),
            "tail_sha256": _tail_sha256(self.file, mark),
        }
        new = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        try:
            with new.open("w") as out:
                json.dump(data, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(new, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                new.unlink()
        self.saved = mark
