"""Uploads, their rejects, upload sessions, live record batches and validation rules in the
Django admin: read-only for staff (their state belongs to the services and the engine)."""

from __future__ import annotations

import msgspec
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from apps.core.admin import CappedCountPaginator, StaffReadOnlyAdmin, choices_filter
from apps.core.exactjson import exact_dumps
from apps.ingestions.models import (
    RecordBatch,
    RecordType,
    Reject,
    Upload,
    UploadSession,
    ValidationRule,
)
from apps.ingestions.presenters import REJECT_CODES
from apps.ingestions.services import MIXED

ROW_COUNTS = [
    "rows_total",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_rejected",
    "rows_pending",
    "rows_duplicates",
    "rows_warned",
]


class _TenantsRowAdmin(StaffReadOnlyAdmin):
    """A tenant's rows: the tenant's name, linked to its page."""

    list_select_related = ["tenant"]

    @admin.display(description="tenant", ordering="tenant__name")
    def tenant_link(self, obj) -> str:
        url = reverse("admin:tenants_tenant_change", args=[obj.tenant_id])
        return format_html('<a href="{}">{}</a>', url, obj.tenant.name)


def _pretty(value) -> str:
    # numbers as stored (a rule's schema keeps them exact)
    return format_html("<pre>{}</pre>", msgspec.json.format(exact_dumps(value), indent=2).decode())


@admin.register(Upload)
class UploadAdmin(_TenantsRowAdmin):
    list_display = ["filename", "tenant_link", "record_type", "state", "rows_total"]
    list_display += ["rows_rejected", "created_at", "finished_at"]
    list_filter = ["state", "record_type", "source"]
    search_fields = ["filename", "tenant__name"]  # and the id
    ordering = ["-created_at"]
    date_hierarchy = "created_at"
    fields = readonly_fields = [
        "id",
        "tenant_link",
        "record_type",
        "filename",
        "source",
        "batch",
        "state",
        "strict",
        "error_code",
        "error_detail",
        "sha256",
        "size_bytes",
        *ROW_COUNTS,
        "rules_version",
        "bytes_done",
        "rows_done",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "rejects_link",
    ]

    @admin.display(description="rejects")
    def rejects_link(self, upload: Upload) -> str:
        url = reverse("admin:ingestions_reject_changelist")
        return format_html('<a href="{}?upload__id__exact={}">its rejects</a>', url, upload.id)


@admin.register(Reject)
class RejectAdmin(StaffReadOnlyAdmin):
    """Rejects of one upload at a time, from its page (searching every reject is a scan)."""

    list_display = ["line", "code", "field", "message", "upload_link"]
    list_filter = [choices_filter("code", REJECT_CODES)]
    paginator = CappedCountPaginator
    list_select_related = ["upload"]
    ordering = ["upload_id", "line"]
    fields = readonly_fields = ["upload_link", "line", "field", "code", "message", "raw"]
    fields += ["all_errors"]

    @admin.display(description="upload")
    def upload_link(self, reject: Reject) -> str:
        url = reverse("admin:ingestions_upload_change", args=[reject.upload_id])
        return format_html('<a href="{}">{}</a>', url, reject.upload.filename)

    @admin.display(description="every error of the row")
    def all_errors(self, reject: Reject) -> str:
        return _pretty(reject.errors or [{"field": reject.field, "code": reject.code}])


@admin.register(UploadSession)
class UploadSessionAdmin(_TenantsRowAdmin):
    list_display = ["token", "tenant_link", "filename", "state", "offset", "size", "expires_at"]
    list_filter = ["state"]
    search_fields = ["filename", "tenant__name"]  # and the token
    ordering = ["-created_at"]
    fields = readonly_fields = [
        "token",
        "tenant_link",
        "filename",
        "record_type",
        "strict",
        "state",
        "offset",
        "size",
        "sha256",
        "upload",
        "error_code",
        "error_detail",
        "metadata",
        "created_at",
        "updated_at",
        "expires_at",
    ]


@admin.register(RecordBatch)
class RecordBatchAdmin(_TenantsRowAdmin):
    list_display = ["id", "tenant_link", "record_type", "state", "records", "rejected"]
    list_display += ["created_at", "merged_at"]
    list_filter = ["state", choices_filter("record_type", [*RecordType.values, MIXED])]
    search_fields = ["tenant__name"]  # and the id
    ordering = ["-id"]
    paginator = CappedCountPaginator
    fields = readonly_fields = [
        "id",
        "tenant_link",
        "record_type",
        "state",
        "records",
        "rejected",
        "accepted",
        "rules_versions",
        "created_at",
        "merged_at",
        "shown_rejects",
        "shown_warnings",
    ]

    def get_queryset(self, request):
        # the list never reads the rejects and warnings (up to one per record each)
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("rejects", "warnings")
        return queryset

    @admin.display(description="rules versions")
    def rules_versions(self, batch: RecordBatch) -> str:
        return _pretty(batch.rules)

    @admin.display(description="rejects")
    def shown_rejects(self, batch: RecordBatch) -> str:
        return _pretty(batch.rejects)

    @admin.display(description="warnings")
    def shown_warnings(self, batch: RecordBatch) -> str:
        return _pretty(batch.warnings)


@admin.register(ValidationRule)
class ValidationRuleAdmin(_TenantsRowAdmin):
    list_display = ["tenant_link", "record_type", "version", "action", "unknown_fields"]
    list_display += ["created_at", "ended_at"]
    list_filter = ["record_type", "action", ("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["tenant__name"]
    ordering = ["tenant__name", "record_type", "-version"]
    fields = readonly_fields = ["tenant_link", "record_type", "version", "action"]
    fields += ["unknown_fields", "created_at", "ended_at", "shown_schema"]

    @admin.display(description="schema")
    def shown_schema(self, rule: ValidationRule) -> str:
        return _pretty(rule.schema)
