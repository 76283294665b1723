"""The ingestion resources as the API shows them: an upload, a live record batch, their
rejects and warnings. Here, not under `apis`, because webhook events carry the very same
representation (`upload_data`, `batch_data`), and services, which write those events, never
import the API."""

from __future__ import annotations

import functools

from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.ingestions.engine import RECORDS
from apps.ingestions.models import MIXED, BatchState, RecordBatch, RecordType, Upload, UploadState
from apps.ingestions.selectors import record_batch_rows

BATCH_TYPES = [*RECORDS, MIXED]  # a batch's type: one record type, or mixed
# Reject codes (SPEC 5): a reject's `code`, and the values of the errors list's filter.
REJECT_CODES = (
    *("invalid_json", "not_an_object", "missing_field", "invalid_type", "invalid_uuid"),
    *("too_long", "out_of_range", "invalid_email", "invalid_currency", "invalid_timestamp"),
    *("line_total_mismatch", "line_too_long", "orphan"),
    *("rule_violation", "unknown_field"),  # of the tenant's rules
)


class LinkingSerializer(serializers.Serializer):
    """An output shape with links: `link(name, **kwargs)` is the named route's URL, absolute
    when the serializer has the request in its context."""

    def link(self, name: str, **kwargs) -> str:
        return link_of(self.context.get("request"), name, **kwargs)


def link_of(request, name: str, **kwargs) -> str:
    """The named route's URL: absolute for the `request`, or without one (an event's data)
    at the configured address."""
    return _absolute(request, reverse(name, kwargs=kwargs))


def _absolute(request, path: str) -> str:
    if request is None:
        return settings.PUBLIC_BASE_URL + path
    return request.build_absolute_uri(path)


@functools.lru_cache(maxsize=16)
def _route_path(name: str, urlconf: str | None, script_prefix: str) -> str:
    """A route without parameters, reversed once per URLconf and script prefix (a reverse
    is a tenth of a single record's answer)."""
    return reverse(name, urlconf=urlconf)


def _batch_url(request, batch_id: int) -> str:
    """`link_of(request, "record-batch-detail", batch_id=...)`: the list's path and the id
    (`tests/ingestions/test_presenters.py` holds them equal)."""
    path = _route_path("record-batch-list", get_urlconf(), get_script_prefix())
    return _absolute(request, f"{path}{batch_id}/")


class RowsOutputSerializer(serializers.Serializer):
    """What happened to the rows: `total` is the sum of all but `warned`."""

    total = serializers.IntegerField()
    inserted = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    rejected = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="held until their parents arrive")
    duplicates = serializers.IntegerField(help_text="an id repeated later in the same file")
    warned = serializers.IntegerField(help_text="loaded with a warning of the tenant's rules")


class ProgressOutputSerializer(serializers.Serializer):
    bytes_done = serializers.IntegerField()
    rows_done = serializers.IntegerField()
    rows_per_second = serializers.FloatField()


class ErrorOutputSerializer(serializers.Serializer):
    """Why a whole file (or session) failed; null when it did not."""

    code = serializers.CharField()
    detail = serializers.CharField()


class UploadOutputSerializer(LinkingSerializer):
    id = serializers.UUIDField()
    url = serializers.SerializerMethodField()
    type = serializers.ChoiceField(RecordType.values, source="record_type")
    filename = serializers.CharField()
    state = serializers.ChoiceField(UploadState.values)
    strict = serializers.BooleanField()
    dry_run = serializers.BooleanField(
        help_text="processed in full, then rolled back: `rows` and the rejects say what a "
        "real run would have done; nothing was loaded"
    )
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    error = serializers.SerializerMethodField()
    rows = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    errors_url = serializers.SerializerMethodField()
    warnings_url = serializers.SerializerMethodField()
    rules_version = serializers.IntegerField(
        allow_null=True,
        help_text="the version of the tenant's rules for the type it was validated with "
        "(null: none, or not validated yet)",
    )
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(serializers.URLField())
    def get_url(self, upload: Upload) -> str:
        return self.link("upload-detail", upload_id=upload.id)

    @extend_schema_field(serializers.URLField())
    def get_errors_url(self, upload: Upload) -> str:
        return self.link("upload-errors", upload_id=upload.id)

    @extend_schema_field(serializers.URLField())
    def get_warnings_url(self, upload: Upload) -> str:
        return self.link("upload-warnings", upload_id=upload.id)

    @extend_schema_field(ErrorOutputSerializer(allow_null=True))
    def get_error(self, upload: Upload) -> dict | None:
        if not upload.error_code:
            return None
        return {"code": upload.error_code, "detail": upload.error_detail}

    @extend_schema_field(RowsOutputSerializer)
    def get_rows(self, upload: Upload) -> dict:
        return upload.row_counts

    @extend_schema_field(ProgressOutputSerializer)
    def get_progress(self, upload: Upload) -> dict:
        return {
            "bytes_done": upload.bytes_done,
            "rows_done": upload.rows_done,
            "rows_per_second": upload.rows_per_second,
        }


def upload_data(upload: Upload, request) -> dict:
    return UploadOutputSerializer(upload, context={"request": request}).data


class RowErrorOutputSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="the field; empty for the line as a whole")
    code = serializers.ChoiceField(REJECT_CODES)
    message = serializers.CharField()


class RejectOutputSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    field = serializers.CharField(help_text="the first problem's field (`errors[0]`)")
    code = serializers.ChoiceField(REJECT_CODES, help_text="the first problem's code (`errors[0]`)")
    message = serializers.CharField(help_text="the first problem's message (`errors[0]`)")
    errors = serializers.SerializerMethodField()
    raw = serializers.CharField()

    @extend_schema_field(
        RowErrorOutputSerializer(many=True, help_text="every problem of the row, in field order")
    )
    def get_errors(self, reject: dict) -> list[dict]:
        return reject_errors(reject)


def reject_errors(reject: dict) -> list[dict]:
    """Every problem of a reject's row. Stored only for a row with more than one: else
    (and for rejects stored before the list was) it is the reject's field, code, message."""
    errors = reject.get("errors")
    if errors:
        return [{"field": e["field"], "code": e["code"], "message": e["message"]} for e in errors]
    return [{"field": reject["field"], "code": reject["code"], "message": reject["message"]}]


class WarningOutputSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    field = serializers.CharField(help_text="the first warning's field (`errors[0]`)")
    code = serializers.CharField(help_text="the first warning's code (`errors[0]`)")
    message = serializers.CharField(help_text="the first warning's message (`errors[0]`)")
    errors = RowErrorOutputSerializer(many=True, help_text="every warning of the row")


class BatchOutputSerializer(LinkingSerializer):
    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    type = serializers.ChoiceField(BATCH_TYPES, source="record_type")
    state = serializers.ChoiceField(BatchState.values)
    records = serializers.IntegerField()
    rejected = serializers.IntegerField()
    rejects = RejectOutputSerializer(many=True)
    warnings = WarningOutputSerializer(
        many=True, help_text="records accepted with warnings of the tenant's rules"
    )
    rules = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="{type: the version of the tenant's rules its records were checked with}",
    )
    rows = serializers.SerializerMethodField()
    errors_url = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    merged_at = serializers.DateTimeField(
        allow_null=True,
        help_text="null until its records are merged; a batch with every record rejected is "
        "`merged` at once and keeps null (nothing of it was merged)",
    )

    @extend_schema_field(serializers.URLField())
    def get_url(self, batch: RecordBatch) -> str:
        return self.link("record-batch-detail", batch_id=batch.id)

    @extend_schema_field(serializers.URLField())
    def get_errors_url(self, batch: RecordBatch) -> str:
        return self.link("record-batch-errors", batch_id=batch.id)

    @extend_schema_field(RowsOutputSerializer)
    def get_rows(self, batch: RecordBatch) -> dict:
        return record_batch_rows(batch=batch)


class BatchListOutputSerializer(BatchOutputSerializer):
    """A batch in the list: its count of rejects, not the rejects themselves (up to one a
    record); those are on its detail and its errors endpoint. Likewise its warnings."""

    rejects = None
    warnings = None


_WHEN = serializers.DateTimeField()


def batch_data(batch: RecordBatch, request) -> dict:
    """A batch as `BatchOutputSerializer` shows it, built directly: each live batch's 202
    carries one, and building the serializer's fields cost more than the rest of the
    answer (`tests/ingestions/test_presenters.py` holds the two equal)."""
    url = _batch_url(request, batch.id)
    return {
        "id": batch.id,
        "url": url,
        "type": str(batch.record_type),
        "state": str(batch.state),
        "records": batch.records,
        "rejected": batch.rejected,
        "rejects": [_reject_data(reject) for reject in batch.rejects],
        "warnings": [_warning_data(warning) for warning in batch.warnings],
        "rules": {str(kind): int(version) for kind, version in batch.rules.items()},
        "rows": record_batch_rows(batch=batch),
        "errors_url": url + "errors/",  # the route under the batch's own
        "created_at": _WHEN.to_representation(batch.created_at),
        "merged_at": None if batch.merged_at is None else _WHEN.to_representation(batch.merged_at),
    }


def _reject_data(reject: dict) -> dict:
    return {**_first_problem(reject), "errors": reject_errors(reject), "raw": str(reject["raw"])}


def _warning_data(warning: dict) -> dict:
    errors = [
        {"field": str(e["field"]), "code": str(e["code"]), "message": str(e["message"])}
        for e in warning["errors"]
    ]
    return {**_first_problem(warning), "errors": errors}


def _first_problem(row: dict) -> dict:
    """A reject's or warning's line, then its first problem's field, code and message."""
    return {
        "line": int(row["line"]),
        "field": str(row["field"]),
        "code": str(row["code"]),
        "message": str(row["message"]),
    }
