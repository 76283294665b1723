"""The ingestion API's output shapes shared by several endpoints: an upload and a session."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from apps.ingestions.models import RecordType, SessionState, Upload, UploadSession, UploadState


class LinkingSerializer(serializers.Serializer):
    """An output shape with links: `link(name, **kwargs)` is the named route's URL, absolute
    when the serializer has the request in its context."""

    def link(self, name: str, **kwargs) -> str:
        path = reverse(name, kwargs=kwargs)
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


SESSION_TYPES = ["", *RecordType.values]  # a session's type: empty until decided


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


class SessionOutputSerializer(LinkingSerializer):
    token = serializers.CharField()
    url = serializers.SerializerMethodField()
    filename = serializers.CharField()
    size = serializers.IntegerField()
    offset = serializers.IntegerField()
    state = serializers.ChoiceField(SessionState.values)
    type = serializers.ChoiceField(
        SESSION_TYPES, source="record_type", help_text="empty: decided at the end"
    )
    sha256 = serializers.CharField(allow_blank=True)
    strict = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    error = serializers.SerializerMethodField()
    upload_id = serializers.UUIDField(allow_null=True)
    upload_url = serializers.SerializerMethodField()
    tus_url = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(serializers.URLField())
    def get_url(self, session: UploadSession) -> str:
        return self.link("session-detail", token=session.token)

    @extend_schema_field(serializers.URLField())
    def get_tus_url(self, session: UploadSession) -> str:
        return self.link("tus-upload", token=session.token)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_upload_url(self, session: UploadSession) -> str | None:
        if session.upload_id is None:
            return None
        return self.link("upload-detail", upload_id=session.upload_id)

    @extend_schema_field(ErrorOutputSerializer(allow_null=True))
    def get_error(self, session: UploadSession) -> dict | None:
        if not session.error_code:
            return None
        return {"code": session.error_code, "detail": session.error_detail}


def session_data(session: UploadSession, request) -> dict:
    return SessionOutputSerializer(session, context={"request": request}).data


# A chunk's answer: the session while its file is unfinished, else the upload of the file
# (the earlier one, with a 200, when its bytes were received before). Each shape requires a
# field the other lacks (`token`, `rows`), so exactly one of them matches.
SessionOrUploadSerializer = PolymorphicProxySerializer(
    component_name="SessionOrUpload",
    serializers=[SessionOutputSerializer, UploadOutputSerializer],
    resource_type_field_name=None,
)
