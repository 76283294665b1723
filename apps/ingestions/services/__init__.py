"""The ingestion app's writes and state changes, one module per responsibility, exported here.

`uploads` receives files; `scheduling` decides when an upload runs (dependency order, giving
way) and hands it to a worker; `processing` runs it; `housekeeping` keeps uploads moving
(periodic jobs, retry); `sessions` and `session_chunks` are resumable uploads; the
Idempotency-Key protocol (`apps.core.idempotency`) is re-exported here; `storage` keeps
uploaded bytes in PostgreSQL; `records` accepts live record batches and `record_merge`
merges them; `rules` keeps a tenant's validation rules; `changes` wakes the reader of the
final tables' change feed; `filenames` cleans a file's name as every route stores it.
Services never import tasks: they send them by name.
"""

from apps.core.idempotency import (
    Answer,
    idempotency_begin,
    idempotency_check,
    idempotency_finish,
    idempotency_purge,
    idempotency_release,
    idempotent,
    request_fingerprint,
)
from apps.ingestions.services.changes import CHANGES_READER_TASK, changes_reader_send
from apps.ingestions.services.chunk_checksums import (
    CHECKSUM_ALGORITHMS,
    ChecksumMismatchError,
    ChunkChecksum,
)
from apps.ingestions.services.filenames import filename_clean
from apps.ingestions.services.housekeeping import (
    pending_expire,
    staging_purge,
    upload_recover,
    upload_requeue,
    upload_retry,
    upload_stop_hung,
    upload_stop_incomplete,
)
from apps.ingestions.services.processing import upload_process, upload_run
from apps.ingestions.services.receiving import upload_cancel, upload_receive
from apps.ingestions.services.record_merge import records_merge, records_merge_stuck
from apps.ingestions.services.records import (
    MIXED,
    RECORDS_MERGE_TASK,
    BacklogFullError,
    record_batch_accept,
    records_check,
    records_merge_enqueue,
)
from apps.ingestions.services.rules import (
    InvalidRulesError,
    rules_current,
    rules_end,
    rules_put,
)
from apps.ingestions.services.scheduling import (
    UPLOAD_PROCESS_TASK,
    ParentsArriving,
    parents_unfinished,
    upload_admit,
    upload_enqueue,
    upload_give_way,
    upload_wake,
)
from apps.ingestions.services.session_chunks import (
    ChunkOutcome,
    session_append,
    sessions_complete_full,
)
from apps.ingestions.services.sessions import (
    SESSION_TOKEN,
    ResumeOutcome,
    session_create,
    session_expire,
    session_lookup,
    session_resume,
    session_terminate,
)
from apps.ingestions.services.storage import BlobReader, blob_purge_orphans, blob_store
from apps.ingestions.services.uploads import (
    Fingerprint,
    UploadOutcome,
    fingerprint,
    record_type_decide,
    upload_create,
    upload_ingest_path,
    upload_register,
)

__all__ = [
    "filename_clean",
    "CHANGES_READER_TASK",
    "MIXED",
    "RECORDS_MERGE_TASK",
    "BacklogFullError",
    "changes_reader_send",
    "record_batch_accept",
    "records_check",
    "records_merge",
    "records_merge_enqueue",
    "records_merge_stuck",
    "InvalidRulesError",
    "rules_current",
    "rules_end",
    "rules_put",
    "CHECKSUM_ALGORITHMS",
    "SESSION_TOKEN",
    "UPLOAD_PROCESS_TASK",
    "Answer",
    "BlobReader",
    "ChecksumMismatchError",
    "ChunkChecksum",
    "ChunkOutcome",
    "Fingerprint",
    "ParentsArriving",
    "ResumeOutcome",
    "UploadOutcome",
    "blob_purge_orphans",
    "blob_store",
    "fingerprint",
    "idempotency_begin",
    "idempotency_check",
    "idempotency_finish",
    "idempotency_purge",
    "idempotency_release",
    "idempotent",
    "parents_unfinished",
    "pending_expire",
    "record_type_decide",
    "request_fingerprint",
    "session_append",
    "sessions_complete_full",
    "session_create",
    "session_expire",
    "session_lookup",
    "session_resume",
    "session_terminate",
    "staging_purge",
    "upload_admit",
    "upload_cancel",
    "upload_create",
    "upload_enqueue",
    "upload_give_way",
    "upload_ingest_path",
    "upload_process",
    "upload_receive",
    "upload_recover",
    "upload_register",
    "upload_requeue",
    "upload_retry",
    "upload_run",
    "upload_stop_hung",
    "upload_stop_incomplete",
    "upload_wake",
]
