"""Uploads, their rejects, sessions, idempotency keys and live record batches; the final
tables and the pending holds are in `tables`, imported here so Django registers them."""

import uuid

from django.db import models
from django.db.models import Q

from apps.core.exactjson import ExactDecoder, ExactEncoder
from apps.core.models import BaseModel
from apps.tenants.models import Tenant


class RecordType(models.TextChoices):
    CUSTOMERS = "customers"
    PRODUCTS = "products"
    ORDERS = "orders"
    ORDER_ITEMS = "order_items"


class UploadState(models.TextChoices):
    RECEIVED = "received"
    QUEUED = "queued"
    WAITING = "waiting"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"


TERMINAL_STATES = frozenset(
    {UploadState.COMPLETED, UploadState.COMPLETED_WITH_ERRORS, UploadState.FAILED}
)


class UploadSource(models.TextChoices):
    FILE = "file"
    LIVE = "live"  # one record type's part of a live records batch: never listed as an upload


class Blob(models.Model):
    """Uploaded bytes, kept in PostgreSQL so any worker on any machine can read them."""

    id = models.BigAutoField(primary_key=True)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(default=0)
    head = models.BinaryField(default=b"")  # the first bytes, to tell the type of a file
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "blobs"

    def __str__(self) -> str:
        return f"blob {self.id} ({self.size_bytes} bytes)"


class BlobChunk(models.Model):
    pk = models.CompositePrimaryKey("blob_id", "seq")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    seq = models.IntegerField()
    data = models.BinaryField()

    class Meta:
        db_table = "blob_chunks"

    def __str__(self) -> str:
        return f"blob {self.blob_id} chunk {self.seq}"


UNIQUE_CONTENT = "uploads_unique_content"  # an IntegrityError naming it: the same bytes again


class Upload(BaseModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="uploads")
    record_type = models.CharField(max_length=16, choices=RecordType.choices)
    filename = models.CharField(max_length=255)
    state = models.CharField(
        max_length=24, choices=UploadState.choices, default=UploadState.RECEIVED
    )
    strict = models.BooleanField(default=False)
    # Processed in full, then rolled back: only its counts and rejects are kept (a report of
    # what a real run would do). db_default: the live parts' one-statement insert omits it.
    dry_run = models.BooleanField(default=False, db_default=False)
    blob = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_detail = models.TextField(blank=True, default="")
    source = models.CharField(max_length=8, choices=UploadSource.choices, default="file")
    batch = models.ForeignKey(
        "RecordBatch", null=True, blank=True, on_delete=models.CASCADE, related_name="parts"
    )
    body = models.BinaryField(null=True, blank=True)  # a live part's bytes (a file's: `blob`)

    rows_total = models.BigIntegerField(default=0)
    rows_inserted = models.BigIntegerField(default=0)
    rows_updated = models.BigIntegerField(default=0)
    rows_unchanged = models.BigIntegerField(default=0)
    rows_rejected = models.BigIntegerField(default=0)
    rows_pending = models.BigIntegerField(default=0)
    rows_duplicates = models.BigIntegerField(default=0)
    rows_warned = models.BigIntegerField(default=0, db_default=0)  # loaded, with warnings
    # The version of the tenant's rules for its type that it was validated with (None: none).
    rules_version = models.IntegerField(null=True, blank=True)

    bytes_done = models.BigIntegerField(default=0)
    rows_done = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Put back by a worker that loaded faster than its bytes arrived (`queued`, unsealed): it
    # waits for its client, not for a worker, until its seal sends it to one again.
    waits_for_bytes = models.BooleanField(default=False, db_default=False)

    class Meta:
        db_table = "uploads"
        constraints = [
            # identical bytes for one tenant and type are one upload, never processed twice;
            # a dry run or a failed one loaded nothing: neither is that upload (the same bytes
            # again run); an upload still receiving its bytes has no sha256 yet ("")
            models.UniqueConstraint(
                fields=["tenant", "record_type", "sha256"],
                condition=Q(source="file", dry_run=False)
                & ~Q(sha256="")
                & ~Q(state=UploadState.FAILED),
                name=UNIQUE_CONTENT,
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "state"], name="uploads_tenant_state"),
            # files of any tenant still to load (the analytics refresh yields to them):
            # the few such rows only, however many live parts the table holds
            models.Index(
                fields=["created_at"],
                condition=Q(source="file", state__in=["queued", "waiting", "processing"]),
                name="uploads_loading",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.record_type}:{self.filename} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def row_counts(self) -> dict[str, int]:
        """The counts as the API shows them under `rows`."""
        return {
            "total": self.rows_total,
            "inserted": self.rows_inserted,
            "updated": self.rows_updated,
            "unchanged": self.rows_unchanged,
            "rejected": self.rows_rejected,
            "pending": self.rows_pending,
            "duplicates": self.rows_duplicates,
            "warned": self.rows_warned,
        }

    @property
    def rows_per_second(self) -> float:
        if not self.started_at:
            return 0.0
        end = self.finished_at or self.updated_at
        seconds = (end - self.started_at).total_seconds()
        return round(self.rows_done / seconds, 1) if seconds > 0 else 0.0


class SessionState(models.TextChoices):
    OPEN = "open"
    COMPLETE = "complete"
    FAILED = "failed"
    EXPIRED = "expired"


class UploadSession(BaseModel):
    """A resumable upload: bytes arrive in chunks at increasing offsets into a blob, and
    the last byte turns the session into an `Upload`. A tus upload is one of these."""

    token = models.CharField(primary_key=True, max_length=64)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    filename = models.CharField(max_length=255)
    size = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")  # expected, if given
    record_type = models.CharField(max_length=16, blank=True, default="")  # explicit, if given
    strict = models.BooleanField(default=False)
    dry_run = models.BooleanField(default=False, db_default=False)  # the upload's, once complete
    state = models.CharField(max_length=16, choices=SessionState.choices, default="open")
    blob = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    upload = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The upload loading the bytes as they arrive, until the session completes (`upload`
    # then), fails, expires or ends.
    receiving = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_detail = models.TextField(blank=True, default="")
    metadata = models.CharField(max_length=4096, blank=True, default="")  # tus Upload-Metadata
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "upload_sessions"
        constraints = [
            models.CheckConstraint(
                condition=Q(offset__gte=0) & Q(offset__lte=models.F("size")),
                name="upload_sessions_offset_in_size",
            )
        ]

    def __str__(self) -> str:
        return f"session {self.token} ({self.offset}/{self.size}, {self.state})"


BatchState = models.TextChoices("BatchState", {"ACCEPTED": "accepted", "MERGED": "merged"})
MIXED = "mixed"  # the type of a batch whose records are of several types
_UNMERGED = Q(state="accepted")


class RecordBatch(BaseModel):
    """Live records, stored (one `Upload` part, `source` live, per type) then merged; the
    id orders a tenant's batches as accepted."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    record_type = models.CharField(max_length=16)  # a record type, or "mixed"
    state = models.CharField(max_length=16, choices=BatchState.choices, default="accepted")
    records = models.IntegerField()
    rejected = models.IntegerField()  # at acceptance
    accepted = models.IntegerField()  # records - rejected: the backlog it adds until merged
    rejects = models.JSONField(default=list)  # at acceptance: [{line, field, code, ...}]
    warnings = models.JSONField(default=list, db_default=[])  # at acceptance, as rejects
    rules = models.JSONField(default=dict, db_default={})  # {type: rules version checked with}
    merged_at = models.DateTimeField(null=True, blank=True, db_index=True)  # merged lately

    class Meta:
        db_table = "record_batches"
        verbose_name_plural = "record batches"  # the admin's, not "record batchs"
        indexes = [models.Index(fields=["tenant", "id"], condition=_UNMERGED, name="batch_backlog")]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.state})"


class _BacklogTotal(models.Model):
    tenant = models.OneToOneField(Tenant, primary_key=True, on_delete=models.CASCADE)
    records = models.BigIntegerField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.records} records ({self._meta.db_table}) of tenant {self.tenant_id}"


class BacklogAccepted(_BacklogTotal):
    """The live records a tenant's batches ever added to its backlog, counted as each is
    stored; less `BacklogMerged`, the backlog the limit refuses at: two lookups, however
    many batches. Two rows: a merge holds its own until it commits, and batches go on."""

    class Meta:
        db_table = "record_backlog_accepted"


class BacklogMerged(_BacklogTotal):
    """The live records of a tenant merged so far, counted by each merge in its transaction
    (see `BacklogAccepted`)."""

    class Meta:
        db_table = "record_backlog_merged"


class MergeRequest(models.Model):
    """A tenant's merge of live records is on its way (a message sent at `sent_at`): a
    batch accepted meanwhile sends none of its own. The merge deletes it as it starts."""

    tenant = models.OneToOneField(Tenant, primary_key=True, on_delete=models.CASCADE)
    sent_at = models.DateTimeField()

    class Meta:
        db_table = "record_merge_requests"

    def __str__(self) -> str:
        return f"merge of tenant {self.tenant_id} sent at {self.sent_at}"


class Reject(models.Model):
    id = models.BigAutoField(primary_key=True)
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="rejects")
    line = models.BigIntegerField()
    field = models.CharField(max_length=64, blank=True, default="")
    code = models.CharField(max_length=32)
    message = models.TextField()
    raw = models.TextField(blank=True, default="")
    # Every problem of the row, [{field, code, message}], the first of them the three above,
    # when it has more than one. Empty when those three are its only problem (and for rejects
    # stored before the list was): the API shows that one as the list.
    errors = models.JSONField(default=list, db_default=[], blank=True)

    class Meta:
        db_table = "rejects"
        indexes = [models.Index(fields=["upload", "line"], name="rejects_upload_line")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.code} ({self.field})"


class RuleAction(models.TextChoices):
    REJECT = "reject"
    WARN = "warn"


class UnknownFields(models.TextChoices):
    IGNORE = "ignore"
    REJECT = "reject"


class ValidationRule(models.Model):
    """One version of a tenant's rules for one record type: a JSON Schema its rows must
    also satisfy. Each PUT adds a version and ends the one before; a DELETE ends the
    current one. Never changed once written: a load compiles the version it was given."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    record_type = models.CharField(max_length=16, choices=RecordType.choices)
    version = models.IntegerField()
    schema = models.JSONField(encoder=ExactEncoder, decoder=ExactDecoder)  # numbers as sent
    action = models.CharField(max_length=8, choices=RuleAction.choices)
    unknown_fields = models.CharField(max_length=8, choices=UnknownFields.choices)
    created_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "validation_rules"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "record_type", "version"], name="validation_rules_version"
            ),
            models.UniqueConstraint(
                fields=["tenant", "record_type"],
                condition=Q(ended_at__isnull=True),
                name="validation_rules_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.record_type} rules v{self.version}"


class UploadWarning(models.Model):
    """A row loaded with warnings (of rules that warn): its first warning as field, code and
    message, and `errors`, every warning of the row."""

    id = models.BigAutoField(primary_key=True)
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="warnings")
    line = models.BigIntegerField()
    field = models.CharField(max_length=64, blank=True, default="")
    code = models.CharField(max_length=32)
    message = models.TextField()
    errors = models.JSONField(default=list)

    class Meta:
        db_table = "row_warnings"
        indexes = [models.Index(fields=["upload", "line"], name="row_warnings_upload_line")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.code} ({self.field})"


# The final tables, the pending holds and the change feed, registered with the app's models.
from apps.ingestions.tables import *  # noqa: E402, F403
