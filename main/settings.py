"""Settings: every value comes from the environment with a dev-safe default."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from kombu.transport import TRANSPORT_ALIASES

from apps.core import logs
from main import embedded
from main.broker import REDIS_TRANSPORT_OPTIONS
from main.env import env_bool, env_choice, env_float, env_int, env_list

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 - dev default, refused above
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",") if h]
# Behind HTTPS: the dashboard's session and CSRF cookies only over TLS. Off by default so
# the compose stack and `make demo` work on plain http://localhost.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)

INSTALLED_APPS = [
    "apps.core.admin_site.StaffAdminConfig",  # django.contrib.admin: /admin/, for staff
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's and Redoc's files, served here (no CDN)
    "corsheaders",  # its system checks refuse a malformed CORS_ALLOWED_ORIGINS
    "apps.core",
    "apps.tenants",
    "apps.ingestions",
    "apps.analytics",
    "apps.webhooks",
    "apps.dashboard",
]

MIDDLEWARE = [
    "apps.core.middleware.HeadMiddleware",  # outermost: no HEAD answer carries a body
    "apps.core.middleware.AccessMiddleware",  # access log and HTTP metrics
    # inside the access log, so preflights are logged; outside the rest, so their error
    # answers (404, 503, a view's 401 and 429) carry the CORS headers too
    "corsheaders.middleware.CorsMiddleware",
    "apps.core.middleware.ProblemJSONMiddleware",
    "apps.core.middleware.TrailingSlashMiddleware",  # before CommonMiddleware's APPEND_SLASH
    "apps.core.bodies.RequestBodyMiddleware",  # bodies read before a DB connection is taken
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn too
    # Django's session, user and messages, outside /api/ only (the API's are its key's)
    "apps.core.middleware.DashboardSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "apps.core.middleware.DashboardAuthenticationMiddleware",
    "apps.core.middleware.DashboardMessageMiddleware",
]

ROOT_URLCONF = "main.urls"
SESSION_ENGINE = "apps.dashboard.sessions"  # Django's database sessions, the cookie read strictly
WSGI_APPLICATION = "main.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Database: DATABASE_URL, or the embedded PostgreSQL (main/embedded.py) when unset.
DATABASE_URL = os.environ.get("DATABASE_URL") or embedded.embedded_database_url()
# Seconds a connection is kept between requests (gunicorn.conf.py sets 0: see there).
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60)
    )
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # services own their transactions
# Prepared statements only where the code asks for them (apps.core.db: the few statements
# every request runs); Django's own cursors never prepare. DATABASE_PREPARE=false turns
# them off, for a connection pooler that cannot keep them (PgBouncer before 1.21).
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
    2**31 if env_bool("DATABASE_PREPARE", True) else None
)
# With DATABASE_POOL_SIZE, each process keeps a pool of at most that many connections
# (psycopg_pool, through Django's `pool` option): a request takes one and gives it back at
# its end, instead of opening its own (about 5 ms). gunicorn.conf.py sets it for the web
# server (WEB_MAX_STREAMING_BODIES + 8); a request waits up to DATABASE_POOL_TIMEOUT
# seconds for one (then 503: the database is down, or every connection is busy).
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 0)
# A kept connection is checked (one round trip) before its first use in a request or task,
# so one the server dropped meanwhile is replaced instead of failing the work; a pooled one
# by apps/core/postgresql, without the round trip when it is known to be alive.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = not DATABASE_POOL_SIZE
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "apps.core.postgresql"  # Django's, and that check
if DATABASE_POOL_SIZE:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 2),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
# The dashboard's few static files are served by WhiteNoise straight from the apps, in
# production too: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True

# Celery (namespace CELERY_): JSON only, late acks, time limits.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or embedded.embedded_broker_url()
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's transport, with each message written whole before a worker can see it
    TRANSPORT_ALIASES["filesystem"] = "main.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = embedded.embedded_broker_options()
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    CELERY_BROKER_TRANSPORT_OPTIONS = dict(REDIS_TRANSPORT_OPTIONS)
# Fail fast when the broker is down: the upload stays queued and a periodic job resends it.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The queue uploads are sent to and workers read: deployments sharing one broker each
# give theirs a name of its own.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE") or "celery"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task sent with a countdown (a live merge, LIVE_MERGE_DELAY_SECONDS later) runs within
# this of its time; Celery's default, 1 s, would hold each merge that long.
CELERY_WORKER_TIMER_PRECISION = 0.05
# Celery's Django fixup closes the database connection before and after every task unless
# this is set; then it closes it once in twice this many. A live merge every few tenths of a
# second would open a connection each time (about 5 ms, and a server process whose caches
# start cold). A worker keeps its connection as the web server does instead, by
# DATABASE_CONN_MAX_AGE and the health check (`main.celery.task_connections`).
CELERY_DB_REUSE_MAX = 2**62
# Far above any healthy upload (a million rows take well under a minute): a stuck one is
# caught by the progress watchdog (UPLOAD_HUNG_SECONDS) long before. A task past the soft
# limit stops cleanly and its upload is reported failed ("timed_out").
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 24 * 3600)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 24 * 3600 + 300)
CELERY_BEAT_SCHEDULE = {
    "upload-requeue": {"task": "apps.ingestions.tasks.upload_requeue_task", "schedule": 60.0},
    "pending-expire": {"task": "apps.ingestions.tasks.pending_expire_task", "schedule": 900.0},
    "idempotency-purge": {
        "task": "apps.ingestions.tasks.idempotency_purge_task",
        "schedule": 3600.0,
    },
    "blob-purge": {"task": "apps.ingestions.tasks.blob_purge_task", "schedule": 3600.0},
    "session-expire": {"task": "apps.ingestions.tasks.session_expire_task", "schedule": 900.0},
    # deliveries due (a lost wake-up, a killed worker, a broker restart): from PostgreSQL
    "webhook-sweep": {
        "task": "apps.webhooks.tasks.webhook_sweep_task",
        "schedule": float(env_int("WEBHOOK_SWEEP_SECONDS", 30)),
    },
    "webhook-purge": {"task": "apps.webhooks.tasks.webhook_purge_task", "schedule": 3600.0},
    "dashboard-sessions-purge": {
        "task": "apps.dashboard.tasks.dashboard_sessions_purge_task",
        "schedule": 3600.0,
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.tenants.authentication.IsTenant"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.SafeJSONParser"],
    "EXCEPTION_HANDLER": "apps.core.api.problem_exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "apps.core.negotiation.ContentNegotiation",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "commerce-ingest API",
    "DESCRIPTION": "Multi-tenant NDJSON ingestion of customers, products, orders and order "
    "items. The record contract, a JSON Schema per type: `GET /api/v1/contract/{type}/`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # one name per set of choices (several fields are called `state` or `type`)
    "ENUM_NAME_OVERRIDES": {
        "RecordTypeEnum": "apps.ingestions.models.RecordType.values",
        "UploadStateEnum": "apps.ingestions.models.UploadState.values",
        "SessionStateEnum": "apps.ingestions.models.SessionState.values",
        "BatchStateEnum": "apps.ingestions.models.BatchState.values",
        "BatchTypeEnum": "apps.ingestions.presenters.BATCH_TYPES",
        "RejectCodeEnum": "apps.ingestions.presenters.REJECT_CODES",
        "WebhookEventTypeEnum": "apps.webhooks.models.EventType.values",
        "DeliveryStateEnum": "apps.webhooks.models.DeliveryState.values",
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.schema.add_response_headers",
    ],
}

# Redis when REDIS_URL (or a redis broker) is configured: the cache (else the database),
# and the rate limits' counters when RATE_LIMIT_STORE says so (below).
REDIS_URL = os.environ.get("REDIS_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else ""
)
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "cache_entries",
        }
    }

# Request limits.
# Bodies up to this size are read whole before the view (and its database connection)
# runs; larger ones stream into PostgreSQL, at most WEB_MAX_STREAMING_BODIES at once per web
# process (one more answers 503 with Retry-After), so slow clients never use up PostgreSQL's
# connections. Keep workers x WEB_MAX_STREAMING_BODIES well under max_connections.
WEB_BUFFER_BODY_BYTES = env_int("WEB_BUFFER_BODY_BYTES", 8 * 1024 * 1024)
WEB_MAX_STREAMING_BODIES = env_int("WEB_MAX_STREAMING_BODIES", 16)
# Requests per API key, "<n>/<period>" (s, min, hour, day; "50/10s" counts the period): a
# fixed window per key, counted atomically (apps/core/ratelimit.py) where RATE_LIMIT_STORE
# says: "postgresql" (the default) in the API key's own lookup, one round trip for both;
# "redis" in REDIS_URL, a second round trip that keeps the count's write off PostgreSQL.
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "600/min")
RATE_LIMIT_STORE = env_choice("RATE_LIMIT_STORE", "postgresql", ("postgresql", "redis"))
if RATE_LIMIT_STORE == "redis" and not REDIS_URL:
    raise RuntimeError("RATE_LIMIT_STORE=redis needs REDIS_URL (or a Redis broker)")
INGEST_MAX_UPLOAD_BYTES = env_int("INGEST_MAX_UPLOAD_BYTES", 5 * 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024  # non-file form fields and JSON bodies
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # bigger files spool to a temp file
IDEMPOTENCY_TTL_SECONDS = env_int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
# An upload left `processing` by a dead worker (or `queued` while the broker was down) is
# sent again after this long, by the re-queue job, which every worker sends itself every
# WORKER_HOUSEKEEPING_SECONDS (0: never; beat sends it every minute where it runs), so it is
# picked up again within UPLOAD_STUCK_SECONDS + WORKER_HOUSEKEEPING_SECONDS with no beat.
UPLOAD_STUCK_SECONDS = env_int("UPLOAD_STUCK_SECONDS", 3 * 60)
WORKER_HOUSEKEEPING_SECONDS = env_int("WORKER_HOUSEKEEPING_SECONDS", 60)
# An upload a live worker holds without writing progress this long is stopped and failed
# ("hung"); progress is written every chunk, and no single statement of a healthy load
# runs anywhere near this long.
UPLOAD_HUNG_SECONDS = env_int("UPLOAD_HUNG_SECONDS", 30 * 60)
# Live records (SPEC 9): per request at most this many records and bytes (more: 413); a
# tenant with more accepted records than LIVE_BACKLOG_LIMIT not merged yet gets 429 with
# Retry-After: LIVE_RETRY_AFTER_SECONDS; a worker merges up to LIVE_MERGE_RECORDS per
# transaction; a batch still unmerged after LIVE_MERGE_STUCK_SECONDS is sent again by the
# re-queue job (a lost message, a killed worker). One merge message per tenant is on its
# way at a time: a batch sends another only when that one was sent more than
# LIVE_MERGE_RESEND_SECONDS ago; a merge waits LIVE_MERGE_LOCK_WAIT for the tenant's lock
# (another merge's), and when a file of the tenant keeps it, puts itself off
# LIVE_MERGE_RETRY_SECONDS instead of holding a worker. A batch's merge starts
# LIVE_MERGE_DELAY_SECONDS after the batch, so that a busy tenant's merges each take the
# batches of that long, not a few (a merge costs about 10 ms whatever its size).
LIVE_MAX_RECORDS = env_int("LIVE_MAX_RECORDS", 10_000)
LIVE_MAX_BYTES = env_int("LIVE_MAX_BYTES", 5 * 1024 * 1024)
LIVE_BACKLOG_LIMIT = env_int("LIVE_BACKLOG_LIMIT", 100_000)
LIVE_RETRY_AFTER_SECONDS = env_int("LIVE_RETRY_AFTER_SECONDS", 1)
LIVE_MERGE_RECORDS = env_int("LIVE_MERGE_RECORDS", 50_000)
LIVE_MERGE_STUCK_SECONDS = env_int("LIVE_MERGE_STUCK_SECONDS", 30)
LIVE_MERGE_RESEND_SECONDS = env_int("LIVE_MERGE_RESEND_SECONDS", 5)
LIVE_MERGE_RETRY_SECONDS = env_float("LIVE_MERGE_RETRY_SECONDS", 0.5)
LIVE_MERGE_LOCK_WAIT = env_float("LIVE_MERGE_LOCK_WAIT", 1.0)
LIVE_MERGE_DELAY_SECONDS = env_float("LIVE_MERGE_DELAY_SECONDS", 0.3)

# Ingestion limits and semantics.
INGEST_MAX_LINE_BYTES = env_int("INGEST_MAX_LINE_BYTES", 1024 * 1024)
INGEST_MAX_DECOMPRESSED_BYTES = env_int("INGEST_MAX_DECOMPRESSED_BYTES", 20 * 1024**3)
INGEST_PENDING_RETENTION_SECONDS = env_int("INGEST_PENDING_RETENTION_SECONDS", 7 * 24 * 3600)
# New rows' foreign keys checked by the engine once per chunk (parents locked FOR KEY SHARE,
# the INSERT run without PostgreSQL's per-row checks) where the database role may set
# session_replication_role; off, PostgreSQL checks every row. Same result, see engine/keys.py.
INGEST_SETWISE_KEY_CHECKS = env_bool("INGEST_SETWISE_KEY_CHECKS", True)
# A raw-body upload (or a session's file) over WEB_BUFFER_BODY_BYTES is queued at its first
# bytes, and loaded while the rest arrives (docs/engine.md#process-while-receiving); off, it
# is queued once stored whole. A worker that has waited INGEST_RECEIVE_PATIENCE_SECONDS in
# all for its bytes, and longer than it loaded, puts it back until they are all in (a slow
# sender must not hold a worker). One whose bytes stop for INGEST_RECEIVE_STALL_SECONDS
# fails (`incomplete_upload`): keep that above WEB_CLIENT_TIMEOUT, after which the web
# drops a silent client itself.
INGEST_PROCESS_WHILE_RECEIVING = env_bool("INGEST_PROCESS_WHILE_RECEIVING", True)
INGEST_RECEIVE_PATIENCE_SECONDS = env_float("INGEST_RECEIVE_PATIENCE_SECONDS", 3.0)
INGEST_RECEIVE_STALL_SECONDS = env_int("INGEST_RECEIVE_STALL_SECONDS", 120)
# A resumable upload session (and a tus upload) left unfinished this long expires and its
# bytes are deleted by the periodic job.
INGEST_SESSION_TTL_SECONDS = env_int("INGEST_SESSION_TTL_SECONDS", 24 * 3600)

# Webhooks (docs/webhooks.md). Endpoint URLs that resolve to loopback, link-local or private
# addresses are refused, at registration and again at each delivery, unless this is on.
WEBHOOK_ALLOW_PRIVATE_URLS = env_bool("WEBHOOK_ALLOW_PRIVATE_URLS", False)
# Seconds a delivery attempt may take all told (connect, send, the answer's head), and each
# connect, read or write within it; redirects are never followed. A worker takes a
# delivery for WEBHOOK_LEASE_SECONDS: if it dies meanwhile, the delivery is taken again
# once that is over (keep it above the timeout).
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5)
WEBHOOK_LEASE_SECONDS = env_float("WEBHOOK_LEASE_SECONDS", 60)
# Seconds between a failed attempt and the next, one per retry (about a day in all), each
# spread by +-WEBHOOK_RETRY_JITTER; after the last one the endpoint is marked failing.
_RETRIES = ["5", "30", "120", "600", "1800", "3600", "7200", "14400", "21600", "28800"]
WEBHOOK_RETRY_SCHEDULE = [float(s) for s in env_list("WEBHOOK_RETRY_SCHEDULE") or _RETRIES]
WEBHOOK_RETRY_JITTER = env_float("WEBHOOK_RETRY_JITTER", 0.2)
# A body larger than this carries a smaller form of its resource (docs/webhooks.md).
WEBHOOK_MAX_PAYLOAD_BYTES = env_int("WEBHOOK_MAX_PAYLOAD_BYTES", 256 * 1024)
# How long a rotated-out secret keeps signing beside the new one.
WEBHOOK_SECRET_OVERLAP_SECONDS = env_int("WEBHOOK_SECRET_OVERLAP_SECONDS", 24 * 3600)
WEBHOOK_MAX_ENDPOINTS = env_int("WEBHOOK_MAX_ENDPOINTS", 50)
# The queue deliveries are sent to (empty: the default queue); attempts are made beside the
# worker's slots (apps.webhooks.senders) either way.
WEBHOOK_QUEUE = os.environ.get("WEBHOOK_QUEUE", "")
# Days an event stays in the delivery log once none of its deliveries is pending (0: ever).
WEBHOOK_RETENTION_DAYS = env_int("WEBHOOK_RETENTION_DAYS", 30)
# The service's public address ("https://ingest.example.com"), for the links (`url`,
# `errors_url`) in events' data, which no request is there to give; empty: paths only.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").rstrip("/")

# CORS (django-cors-headers), for browser pages on other origins that call the API, e.g. a
# tus upload from a web page: only the origins listed ("https://app.example.com", comma-
# separated; none by default) and only under /api/ (never the dashboard). No cookies: the
# API key is a header, which the preflight allows.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
CORS_ALLOW_HEADERS = (
    "accept",
    "content-type",
    "x-api-key",
    "idempotency-key",
    "x-request-id",
    # tus 1.0 requests (a tus client's own OPTIONS, sent without
    # Access-Control-Request-Method, is no preflight: it reaches the tus view)
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-defer-length",
    "upload-checksum",
    "upload-concat",
    "if-none-match",  # the contract's ETag
)
# Response headers a page's script may read (beyond the CORS-safelisted few).
CORS_EXPOSE_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Upload-Result",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Retry-After",
    "X-Request-Id",
    "Link",
    "ETag",
)

# Logs (apps/core/logs.py): JSON lines with LOG_FORMAT=json (the default when DEBUG is off),
# readable lines otherwise; tenant, upload and task ids on every line; LOG_LEVEL.
LOG_FORMAT = logs.log_format()
LOGGING = logs.logging_config(fmt=LOG_FORMAT)
