"""The ingestion API's output shapes shared by several endpoints: a session here, and an
upload (`apps.ingestions.presenters`, which webhook events share)."""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from apps.ingestions.models import RecordType, SessionState, UploadSession
from apps.ingestions.presenters import (
    ErrorOutputSerializer,
    LinkingSerializer,
    RowsOutputSerializer,
    UploadOutputSerializer,
    upload_data,
)

__all__ = [
    "ErrorOutputSerializer",
    "LinkingSerializer",
    "RowsOutputSerializer",
    "SessionOrUploadSerializer",
    "SessionOutputSerializer",
    "UploadOutputSerializer",
    "session_data",
    "upload_data",
]


SESSION_TYPES = ["", *RecordType.values]  # a session's type: empty until decided


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
