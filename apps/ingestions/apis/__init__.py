"""The ingestion HTTP API: uploads, resumable sessions, tus, live records, validation
rules and the record contract."""

from apps.ingestions.apis.contract import ContractDetailApi, ContractListApi
from apps.ingestions.apis.records import (
    RecordBatchCreateApi,
    RecordBatchCreateMixedApi,
    RecordBatchDetailApi,
    RecordBatchErrorsApi,
    RecordBatchListApi,
)
from apps.ingestions.apis.rules import RulesDetailApi, RulesListApi, UploadWarningsApi
from apps.ingestions.apis.sessions import (
    SessionCreateApi,
    SessionDetailApi,
    SessionResumeApi,
    SessionStatusApi,
)
from apps.ingestions.apis.tus import TusCreateApi, TusUploadApi
from apps.ingestions.apis.uploads import (
    LegacyOrdersUploadApi,
    UploadCreateApi,
    UploadDetailApi,
    UploadErrorsApi,
    UploadListApi,
)

__all__ = [
    "ContractDetailApi",
    "ContractListApi",
    "RecordBatchCreateApi",
    "RecordBatchCreateMixedApi",
    "RecordBatchDetailApi",
    "RecordBatchErrorsApi",
    "RecordBatchListApi",
    "LegacyOrdersUploadApi",
    "RulesDetailApi",
    "RulesListApi",
    "SessionCreateApi",
    "SessionDetailApi",
    "SessionResumeApi",
    "SessionStatusApi",
    "TusCreateApi",
    "TusUploadApi",
    "UploadCreateApi",
    "UploadDetailApi",
    "UploadErrorsApi",
    "UploadListApi",
    "UploadWarningsApi",
]
