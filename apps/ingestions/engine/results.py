"""Results of the engine: frozen dataclasses, no Django in sight."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RowCounts:
    """What happened to the rows of one upload.

    `total = inserted + updated + unchanged + rejected + pending + duplicates`; `warned`
    (rows loaded with a warning of the tenant's rules) is not a part of it.
    """

    total: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    pending: int = 0
    duplicates: int = 0
    warned: int = 0


@dataclass(frozen=True, slots=True)
class ResolvedCounts:
    """Rows of one earlier upload that left the pending hold during a later merge."""

    upload_id: str
    record_type: str
    inserted: int
    updated: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The outcome of `load_upload`: counts, whether anything was merged (strict mode can
    refuse), bytes read (decompressed) and pending rows of earlier uploads resolved."""

    rows: RowCounts
    merged: bool
    bytes_read: int
    resolved: tuple[ResolvedCounts, ...] = field(default=())
    superseded: tuple[tuple[str, int], ...] = field(default=())  # older held rows replaced


class FileError(Exception):
    """A file-level failure: the file as a whole cannot be read, nothing is loaded."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class ParentsComing(Exception):  # noqa: N818 - a decision, not an error
    """The load was given up, nothing of it merged: rows were about to be held for missing
    parents that the caller says are on their way (an upload of theirs has arrived), so
    the file is better loaded after them than held and resolved."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem of a rejected line: the field (empty for the line as a whole), a machine
    code and a message."""

    field: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RowReject:
    """A rejected line: where, which field, why (a machine code and a message), as sent;
    `errors` is every problem of the line, the first of them `field`, `code` and `message`
    (left out, it is that one alone)."""

    line: int
    field: str
    code: str
    message: str
    raw: str
    errors: tuple[RowError, ...] = ()

    def __post_init__(self) -> None:
        if not self.errors:
            object.__setattr__(self, "errors", (RowError(self.field, self.code, self.message),))


@dataclass(frozen=True, slots=True)
class RowWarning:
    """A line loaded with warnings (of rules that warn): where, the first warning's field,
    code and message, and `errors`, every warning of the line."""

    line: int
    field: str
    code: str
    message: str
    errors: tuple[RowError, ...]
