"""The ingestion API's output shapes shared by several endpoints: an upload and a session."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from apps.ingestions.models import Upload, UploadSession


class LinkingSerializer(serializers.Serializer):
    """An output shape with links: `link(name, **kwargs)` is the named route's URL, absolute
    when the serializer has the request in its context."""

    def link(self, name: str, **kwargs) -> str:
        path = reverse(name, kwargs=kwargs)
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class UploadOutputSerializer(LinkingSerializer):
    id = serializers.UUIDField()
    url = serializers.SerializerMethodField()
    type = serializers.CharField(source="record_type")
    filename = serializers.CharField()
    state = serializers.CharField()
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
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, upload: Upload) -> str:
        return self.link("upload-detail", upload_id=upload.id)

    def get_errors_url(self, upload: Upload) -> str:
        return self.link("upload-errors", upload_id=upload.id)

    def get_error(self, upload: Upload) -> dict | None:
        if not upload.error_code:
            return None
        return {"code": upload.error_code, "detail": upload.error_detail}

    def get_rows(self, upload: Upload) -> dict:
        return upload.row_counts

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
    state = serializers.CharField()
    type = serializers.CharField(source="record_type", allow_blank=True)
    sha256 = serializers.CharField(allow_blank=True)
    strict = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    error = serializers.SerializerMethodField()
    upload_id = serializers.UUIDField(allow_null=True)
    upload_url = serializers.SerializerMethodField()
    tus_url = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()

    def get_url(self, session: UploadSession) -> str:
        return self.link("session-detail", token=session.token)

    def get_tus_url(self, session: UploadSession) -> str:
        return self.link("tus-upload", token=session.token)

    def get_upload_url(self, session: UploadSession) -> str | None:
        if session.upload_id is None:
            return None
        return self.link("upload-detail", upload_id=session.upload_id)

    def get_error(self, session: UploadSession) -> dict | None:
        if not session.error_code:
            return None
        return {"code": session.error_code, "detail": session.error_detail}


def session_data(session: UploadSession, request) -> dict:
    return SessionOutputSerializer(session, context={"request": request}).data
