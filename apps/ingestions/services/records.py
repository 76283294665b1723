"""Live records: a batch read and checked at once, its accepted rows stored durably, then
merged by a worker (`record_merge`).

A batch is NDJSON or a JSON array, of one record type or of `{"type", "record"}` elements.
Every record is checked with the engine's own line check, so the answer's rejects are those
a file of the same lines would get. The accepted rows of each type are stored, in the
request's transaction, as an `Upload` part (`source` live) whose bytes (kept in the row,
`body`) are an NDJSON file with each row at its position in the batch (blank lines
elsewhere), so the engine loads them, counts them, holds them pending and names their
lines exactly as for a file.

One merge per tenant is on its way at a time: a batch sends one only when none is
(`MergeRequest`), so a busy tenant's batches do not each wake a worker.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import msgspec
from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError, PayloadTooLargeError
from apps.ingestions import engine
from apps.ingestions.models import MIXED, BatchState, MergeRequest, RecordBatch
from apps.ingestions.services.record_store import NewPart, batch_store
from apps.ingestions.services.rules import rules_current
from apps.tenants.models import Tenant

logger = logging.getLogger("apps.ingestions.services")

RECORDS_MERGE_TASK = "apps.ingestions.tasks.records_merge_task"
_Envelope = dict[str, msgspec.Raw]


class BacklogFullError(ApplicationError):
    status = 429
    code = "backlog_full"
    title = "Too many records waiting to be merged"


@dataclass
class _Checked:
    """A batch read and checked against the contract and the tenant's `rules` (by type):
    per type, the accepted lines; the rejects; the warnings of accepted lines; the count;
    the version of the rules each type was checked with."""

    rules: dict[str, engine.Rules] = field(default_factory=dict)
    records: int = 0
    lines: dict[str, list[engine.Line]] = field(default_factory=dict)
    rejects: list[engine.RowReject] = field(default_factory=list)
    warnings: list[engine.RowWarning] = field(default_factory=list)
    warned: dict[str, int] = field(default_factory=dict)  # by type
    versions: dict[str, int] = field(default_factory=dict)
    # read once, not once a record (a setting is a lookup through Django's lazy object)
    max_records: int = field(default_factory=lambda: settings.LIVE_MAX_RECORDS)

    def add(self, record_type: str | None, line: engine.Line, reject=None) -> None:
        self.records += 1
        if self.records > self.max_records:
            raise PayloadTooLargeError(
                f"More than {self.max_records} records in one batch.",
                code="too_many_records",
            )
        if reject is None and record_type is not None:
            rules = self.rules.get(record_type)
            if rules is not None:
                self.versions[record_type] = rules.version
            reject = engine.check_line(record_type, line, rules)
            if isinstance(reject, engine.RowWarning):
                self.warnings.append(reject)
                self.warned[record_type] = self.warned.get(record_type, 0) + 1
                reject = None
        if reject is not None:
            self.rejects.append(reject)
        else:
            self.lines.setdefault(record_type, []).append(line)


def _envelope_reject(number: int, data: bytes, problems: list[tuple[str, str, str]]):
    """The reject of a `{"type", "record"}` element itself: its (field, code, message)s."""
    errors = tuple(engine.RowError(*problem) for problem in problems)
    return engine.RowReject(number, *problems[0], data.decode("utf-8", "replace"), errors)


def _add_element(checked: _Checked, record_type: str | None, line: engine.Line) -> None:
    """One record, or with no `record_type` one `{"type", "record"}` element."""
    if record_type is not None:
        checked.add(record_type, line)
        return
    if line.too_long:  # the element itself: its type is not read, it is rejected as it is
        return checked.add(None, line, engine.check_line(engine.RECORD_ORDER[0], line))
    number, data, _ = line
    try:
        envelope = msgspec.json.decode(data, type=_Envelope)
    except msgspec.ValidationError:
        problem = ("", "not_an_object", "the element is not an object")
        return checked.add(None, line, _envelope_reject(number, data, [problem]))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return checked.add(engine.RECORD_ORDER[0], line)  # the engine says why (invalid_json)
    problems = []
    if "type" not in envelope:
        problems.append(("type", "missing_field", "type is required"))
    else:
        try:  # the envelope's decode leaves its values' bytes unread (invalid UTF-8 in them)
            kind = msgspec.json.decode(envelope["type"])
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return checked.add(engine.RECORD_ORDER[0], line)  # the engine says why
        if not isinstance(kind, str) or kind not in engine.RECORDS:
            message = f"type must be one of {', '.join(engine.RECORDS)}"
            problems.append(("type", "invalid_type", message))
    if "record" not in envelope:
        problems.append(("record", "missing_field", "record is required"))
    if problems:
        return checked.add(None, line, _envelope_reject(number, data, problems))
    record = engine.line_of(
        number, bytes(envelope["record"]), max_line_bytes=settings.INGEST_MAX_LINE_BYTES
    )
    checked.add(kind, record)


def _one_line(element: bytes) -> bytes:
    """An array element as one NDJSON line, values as sent. Too deep or too broken to
    re-format, its line breaks become spaces (between JSON tokens they are whitespace; in a
    string, a raw one is invalid anyway) and the line check rejects it."""
    try:
        return msgspec.json.format(element, indent=-1)
    except (RecursionError, msgspec.DecodeError, UnicodeDecodeError):
        return element.replace(b"\r", b" ").replace(b"\n", b" ")


def records_check(
    *,
    record_type: str | None,
    body: bytes,
    json_array: bool,
    rules: dict[str, engine.Rules] | None = None,
) -> _Checked:
    """Read a batch body (NDJSON, or a JSON array when `json_array`) and check every record,
    against the tenant's `rules` too (by type): `line` is the physical line of an NDJSON
    body, the 1-based position in an array."""
    if not body.strip():
        raise ApplicationError("The batch is empty: send at least one record.", code="empty_batch")
    checked = _Checked(rules=rules or {})
    limit = settings.INGEST_MAX_LINE_BYTES
    if record_type is None:  # the record of a `{"type", "record"}` element has the limit
        limit += _ENVELOPE_BYTES
    if json_array:
        for position, raw in enumerate(_array_elements(body), start=1):
            data = _one_line(bytes(raw))
            _add_element(checked, record_type, engine.line_of(position, data, max_line_bytes=limit))
    else:
        try:
            for line in engine.split_lines(
                body, max_line_bytes=limit, max_bytes=settings.LIVE_MAX_BYTES
            ):
                if line.too_long or (line.data and not line.data.isspace()):
                    _add_element(checked, record_type, line)
        except engine.FileError as exc:
            raise _body_error(exc) from None
    if not checked.records:
        raise ApplicationError("The batch is empty: send at least one record.", code="empty_batch")
    return checked


# What a `{"type", "record"}` element may hold beside its record (its keys, its type, the
# space between): its record is held to the line limit, and the element to this much more.
_ENVELOPE_BYTES = 1024


def _array_elements(body: bytes) -> list[msgspec.Raw] | list[bytes]:
    """A JSON array body's elements, as sent (gzip or zstd decompressed first, as an NDJSON
    body is; a leading UTF-8 BOM, not JSON's, read past as there)."""
    try:
        body = engine.decompressed(body, max_bytes=settings.LIVE_MAX_BYTES)
    except engine.FileError as exc:
        raise _body_error(exc) from None
    body = body.removeprefix(codecs.BOM_UTF8)
    try:
        return msgspec.json.decode(body, type=list[msgspec.Raw])
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec reads even the elements it leaves raw: a fault inside one (a lone
        # surrogate, a control character in a string) is that record's reject, as its line
        # in NDJSON is, not the whole batch's 400, when the array's outline is sound
        if body.lstrip(_JSON_SPACE)[:1] != b"[":
            raise _not_an_array(str(exc)) from None
        return _outlined_elements(body)
    except msgspec.ValidationError as exc:
        raise _not_an_array(str(exc)) from None
    except RecursionError:  # an element nested deeper than the decoder goes: as above
        return _outlined_elements(body)


def _not_an_array(detail: str) -> ApplicationError:
    return ApplicationError(f"The body is not a JSON array: {detail}", code="bad_json")


_JSON_SPACE = b" \t\r\n"
# What matters to an array's outline: a string (its brackets and commas are text), a
# bracket, a comma; a quote left over opens a string that never ends.
_OUTLINE = re.compile(rb'"(?:[^"\\]|\\.)*+"|[][{},]|"', re.DOTALL)


def _outlined_elements(body: bytes) -> list[bytes]:
    """A JSON array's elements, found without recursion by its outline (strings, brackets
    and commas), for a body the decoder could not read whole: one element too deep, or
    one that is no JSON. The outline must be sound and no element empty, or the body is no
    array (400); an element that does not decode is left to its record's check (an
    `invalid_json` reject)."""
    text = body.rstrip(_JSON_SPACE)
    skipped = len(text) - len(text := text.lstrip(_JSON_SPACE))  # for the bytes' positions
    if text[:1] != b"[" or text[-1:] != b"]":
        raise _not_an_array("it does not start with '[' and end with ']'.")
    elements, depth, start = [], 0, 1
    for token in _OUTLINE.finditer(text, 1, len(text) - 1):
        mark = token.group()
        if mark in (b"[", b"{"):
            depth += 1
        elif mark in (b"]", b"}"):
            depth -= 1
        elif mark == b"," and depth == 0:
            elements.append(text[start : token.start()])
            start = token.end()
        elif mark == b'"':
            raise _not_an_array(f"a string at byte {skipped + token.start()} never ends.")
        if depth < 0:
            at = skipped + token.start()
            raise _not_an_array(f"an unmatched {mark.decode()!r} at byte {at}.")
    if depth:
        raise _not_an_array("it ends inside an element.")
    elements.append(text[start:-1])
    if len(elements) == 1 and not elements[0].strip(_JSON_SPACE):
        return []
    for number, element in enumerate(elements, start=1):
        if not element.strip(_JSON_SPACE):
            raise _not_an_array(f"element {number} is empty (two commas, or a trailing one).")
    return elements


def _body_error(exc: engine.FileError) -> ApplicationError:
    """A compressed body that cannot be read is 400; one that decompresses past the batch's
    byte limit is 413, as a body that large is."""
    if exc.code == "decompression_bomb":
        return PayloadTooLargeError(exc.detail, code=exc.code)
    return ApplicationError(exc.detail, code=exc.code)


def _part_bytes(lines: list[engine.Line]) -> bytes:
    """An NDJSON file with each line at its number (blank lines between)."""
    out = [b""] * lines[-1].number
    for number, data, _ in lines:
        out[number - 1] = data
    return b"\n".join(out) + b"\n"


def record_batch_accept(
    *, tenant: Tenant, record_type: str | None, body: bytes, json_array: bool
) -> RecordBatch:
    """Check a batch and store what it accepts, durably, before answering; the merge is
    sent once that commits, unless one is on its way (`records_merge_enqueue`). Refused
    (429) while the tenant's backlog is at the limit. Records are checked against the
    tenant's current rules too; the batch and its parts record their versions."""
    rules = rules_current(tenant_id=tenant.id, record_type=record_type, serial=tenant.rules_serial)
    checked = records_check(record_type=record_type, body=body, json_array=json_array, rules=rules)
    accepted = checked.records - len(checked.rejects)
    batch = RecordBatch(
        tenant_id=tenant.id,
        record_type=record_type or MIXED,
        state=BatchState.ACCEPTED if accepted else BatchState.MERGED,
        records=checked.records,
        rejected=len(checked.rejects),
        accepted=accepted,
        rejects=[asdict(r) for r in sorted(checked.rejects, key=lambda r: r.line)],
        warnings=[asdict(w) for w in sorted(checked.warnings, key=lambda w: w.line)],
        rules=checked.versions,
    )
    parts = [
        _part(kind, lines, checked.versions.get(kind), checked.warned.get(kind, 0))
        for kind in engine.RECORD_ORDER
        if (lines := checked.lines.get(kind))
    ]
    stored = batch_store(
        batch=batch, parts=parts, limit=settings.LIVE_BACKLOG_LIMIT, merge_fresh=_merge_fresh()
    )
    if stored.refused_by is not None:
        raise BacklogFullError(
            f"{stored.refused_by} accepted records are waiting to be merged (the limit is "
            f"{settings.LIVE_BACKLOG_LIMIT}); retry later.",
            headers={"Retry-After": str(settings.LIVE_RETRY_AFTER_SECONDS)},
        )
    if accepted and not stored.merge_pending:
        # No merge on its way that will see this batch (`batch_store` says why it can
        # tell): send one once the batch is committed.
        tenant_id, delay = tenant.id, settings.LIVE_MERGE_DELAY_SECONDS or None
        transaction.on_commit(lambda: records_merge_enqueue(tenant_id=tenant_id, countdown=delay))
    logger.info(
        "record batch accepted",
        extra={"batch_id": batch.id, "records": batch.records, "rejected": batch.rejected},
    )
    return batch


def _part(
    record_type: str, lines: list[engine.Line], rules_version: int | None, warned: int
) -> NewPart:
    body = _part_bytes(lines)
    return NewPart(record_type, body, hashlib.sha256(body).hexdigest(), rules_version, warned)


def _merge_fresh():
    """A merge request sent since then is still on its way; an older one was lost."""
    return timezone.now() - timedelta(seconds=settings.LIVE_MERGE_RESEND_SECONDS)


def records_merge_enqueue(*, tenant_id, countdown: float | None = None, force=False) -> bool:
    """Send the tenant's merge (by name: services never import tasks) unless one is on its
    way already, sent less than `LIVE_MERGE_RESEND_SECONDS` ago; with `force`, send it
    anyway (the merge putting itself off). Returns whether it was sent. A lost message is
    recovered by the next batch once the request is that old, or by the housekeeping
    (`records_merge_stuck`)."""
    stale = _merge_fresh()
    with connection.cursor() as cursor:
        if not force:  # the usual answer, read without a write (and its WAL flush)
            cursor.execute(
                "SELECT 1 FROM record_merge_requests WHERE tenant_id = %s AND sent_at >= %s",
                [tenant_id, stale],
            )
            if cursor.fetchone() is not None:
                return False
        cursor.execute(
            "INSERT INTO record_merge_requests (tenant_id, sent_at) VALUES (%s, now()) "
            "ON CONFLICT (tenant_id) DO UPDATE SET sent_at = now() "
            "WHERE %s OR record_merge_requests.sent_at < %s RETURNING 1",
            [tenant_id, force, stale],
        )
        if cursor.fetchone() is None:
            return False
    try:
        current_app.send_task(RECORDS_MERGE_TASK, args=[str(tenant_id)], countdown=countdown)
    except Exception:  # the broker is down: the batch is stored, the housekeeping sends it
        logger.warning("record merge of tenant %s not sent", tenant_id, exc_info=True)
        MergeRequest.objects.filter(tenant_id=tenant_id).delete()
        return False
    return True
