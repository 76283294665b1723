import functools
import logging
import re
import time
import uuid
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.db import OperationalError, connection
from django.http import Http404, JsonResponse, UnreadablePostError
from django.urls import Resolver404, get_resolver, get_urlconf
from psycopg_pool import PoolTimeout

from apps.core.api import PROBLEM_JSON, problem
from apps.core.logs import log_bind, log_fresh, log_reset
from apps.core.metrics import http_observe
from apps.core.wsgi import IncompleteBodyError

access_logger = logging.getLogger("apps.access")
error_logger = logging.getLogger("django.request")

_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    500: "Server error",
    503: "Service unavailable",
}
# Seconds a client is asked to wait when the database refused or dropped its connection.
DATABASE_RETRY_AFTER = 5


class HeadMiddleware:
    """Outermost: a HEAD answer is the GET answer's status and headers without a body
    (RFC 9110 9.3.2), whatever view, middleware or error page made it. gunicorn sends any
    body it is given, and on a kept-alive connection the client would read that body as
    the next answer. Content-Length stays the GET answer's length, as HEAD may tell."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method != "HEAD":
            return response
        if response.streaming:
            # never iterated: the view's generator or file is only closed (with the response)
            response.streaming_content = ()
        else:
            if not response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
            response.content = b""
        return response


# A client's own X-Request-Id is kept when it is this sane (a UUID, a trace id, ...): it
# goes into log lines and answers as it is.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(request) -> str:
    """The request's id: the client's `X-Request-Id` when sane, else a new UUID."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if _REQUEST_ID.fullmatch(given) else str(uuid.uuid4())


class AccessMiddleware:
    """Outermost: one access log line per request (method, path, status, duration, and the
    tenant when a key authenticated it), HTTP metrics, and a fresh set of log ids, so lines
    logged while answering never carry a previous request's tenant or upload. The request's
    id (`request_id_of`) is bound on every line, sent with the tasks it causes, put in
    problem+json bodies and answered as `X-Request-Id`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        token = log_fresh()
        request.request_id = request_id_of(request)
        log_bind(request_id=request.request_id)
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request.request_id
            seconds = time.perf_counter() - started
            tenant = getattr(request, "auth", None)  # DRF sets it on the Django request too
            access_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 1),
                    "tenant_id": str(tenant.id) if hasattr(tenant, "id") else None,
                },
            )
            http_observe(method=request.method, status=response.status_code, seconds=seconds)
            return response
        finally:
            log_reset(token)


class TrailingSlashMiddleware:
    """A path that names a route only once its trailing slash is added (or removed) is
    answered by that route. APPEND_SLASH would redirect instead, which drops a POST's body
    (and in debug mode Django refuses with a 500); only a GET or HEAD outside the API is
    still redirected, so a dashboard page keeps one address."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        resolver = get_resolver(getattr(request, "urlconf", None) or get_urlconf())
        if path != "/" and not _resolves(resolver, path):
            other = path[:-1] if path.endswith("/") else f"{path}/"
            redirected = (
                request.method in ("GET", "HEAD")
                and other.endswith("/")
                and not path.startswith("/api/")
            )
            if not redirected and _resolves(resolver, other):
                request.path = request.path.removesuffix(path) + other
                request.path_info = other
        return self.get_response(request)


@functools.lru_cache(maxsize=1024)
def _resolves(resolver, path: str) -> bool:
    """Does `path` name a route of `resolver` (`is_valid_path`, remembered: the same few
    paths come again and again, and resolving one is a tenth of a small request's time).
    Keyed by the resolver itself, which Django makes anew when the URLconf changes."""
    try:
        resolver.resolve(path)
    except Resolver404:
        return False
    return True


class ProblemJSONMiddleware:
    """Errors that never reach a DRF view (unknown URLs, Django's own 4xx/5xx pages, an
    exception in a plain view) answer as application/problem+json, never an HTML page;
    only a browser on the dashboard or the admin (it asks for HTML by name) gets Django's
    page."""

    HTML_PREFIXES = ("/dashboard/", "/admin/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "%00" in request.META.get("QUERY_STRING", ""):  # gunicorn refuses a raw NUL
            # read or not by the view (an unknown parameter is ignored), refused alike
            return _nul_in_query(request.META["QUERY_STRING"])
        response = self.get_response(request)
        wants_html = request.path.startswith(self.HTML_PREFIXES) and "text/html" in (
            request.headers.get("Accept", "")
        )
        if (
            response.status_code >= 400
            and response.get("Content-Type", "").startswith("text/html")
            and not wants_html
        ):
            code = response.status_code
            detail = (
                f"No resource at {request.path}."
                if code == 404
                else f'Method "{request.method}" not allowed.'
                if code == 405
                else "The server failed to handle this request."
                if code >= 500
                else "The request was refused."
            )
            problem_response = problem_answer(code, detail)
            for name in _KEPT_HEADERS:  # a 405 must say what is allowed
                if name in response:
                    problem_response[name] = response[name]
            return problem_response
        return response

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig):  # a JSON body past Django's limit
            return problem_answer(
                413,
                f"The request body is over the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE}-byte "
                "limit of this request.",
                code="payload_too_large",
            )
        if isinstance(exception, Http404 | PermissionDenied | SuspiciousOperation | BadRequest):
            return None  # Django answers these with their 4xx; __call__ converts the page
        if isinstance(exception, UnreadablePostError | IncompleteBodyError):
            # The client sent less than it announced or went away mid-body: its request is
            # refused, and the transaction that was storing it has rolled back.
            return incomplete_body(exception)
        if isinstance(exception, OperationalError):
            # The database refused or dropped the connection (too many clients, a restart,
            # a failover), or every connection of this process's pool stayed busy: nothing
            # was done, and the same request can succeed shortly.
            busy = isinstance(exception.__cause__, PoolTimeout) and _pool_full()
            error_logger.error(
                "Database %s: %s",
                "connections all busy" if busy else "unavailable",
                request.path,
                exc_info=exception,
                extra={"status": 503},
            )
            response = problem_answer(
                503,
                "Every database connection of this server is busy; retry shortly."
                if busy
                else "The database is unavailable; retry shortly.",
                code="database_busy" if busy else "database_unavailable",
            )
            response["Retry-After"] = str(DATABASE_RETRY_AFTER)
            response._has_been_logged = True
            return response
        error_logger.error(
            "Internal Server Error: %s", request.path, exc_info=exception, extra={"status": 500}
        )
        response = problem_answer(500, "The server failed to handle this request.")
        response._has_been_logged = True  # logged above, with the traceback
        return response


def _pool_full() -> bool:
    """Whether this process's connection pool has all the connections it may open (so a
    wait for one that ran out found them busy; with fewer, the server would not take a
    new one: it is unavailable)."""
    pool = getattr(connection, "pool", None)
    if pool is None:
        return False
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= stats.get("pool_max", 1)


_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def problem_answer(status: int, detail: str, *, code: str | None = None, **extra) -> JsonResponse:
    title = _TITLES.get(status, "Error")
    slug = code or title.lower().replace(" ", "_")
    response = JsonResponse(
        problem(status, title, detail, slug, **extra), status=status, content_type=PROBLEM_JSON
    )
    # answered outside CommonMiddleware, which would set it
    response["Content-Length"] = str(len(response.content))
    return response


def _nul_in_query(query: str) -> JsonResponse:
    """400 naming the first parameter whose name or value holds a NUL byte."""
    pairs = parse_qsl(query, keep_blank_values=True)
    name = next((n for n, v in pairs if "\x00" in n + v), "\x00").replace("\x00", "\\x00")
    message = "holds a NUL byte (%00)."
    return problem_answer(400, f"{name}: {message}", code="bad_query", errors={name: [message]})


def incomplete_body(exception: Exception) -> JsonResponse:
    return problem_answer(
        400, str(exception) or "The request body could not be read.", code="incomplete_body"
    )


# The dashboard's and the admin's middleware, which the API never needs: it authenticates
# by key (`request.user` is DRF's) and keeps no session and no messages. Each API request
# would otherwise make a session store, a lazy user and a message store that nothing reads
# (about 3% of a single record's request). Subclasses, so that Django's checks of the
# admin's requirements still find them.
API_PREFIX = "/api/"


class DashboardSessionMiddleware(SessionMiddleware):
    """Django's, for every path outside the API."""

    def process_request(self, request):
        if not request.path_info.startswith(API_PREFIX):
            super().process_request(request)

    def process_response(self, request, response):
        if not hasattr(request, "session"):
            return response
        return super().process_response(request, response)


class DashboardAuthenticationMiddleware(AuthenticationMiddleware):
    """Django's, where there is a session (`DashboardSessionMiddleware`)."""

    def process_request(self, request):
        if hasattr(request, "session"):
            super().process_request(request)


class DashboardMessageMiddleware(MessageMiddleware):
    """Django's, where there is a session (`DashboardSessionMiddleware`); its
    process_response already passes a request it gave no messages."""

    def process_request(self, request):
        if hasattr(request, "session"):
            super().process_request(request)
