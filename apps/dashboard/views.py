"""The monitoring dashboard: server-rendered pages, and one small JSON document that the page
polls to refresh itself. Every number is formatted here, once, for both."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.contrib.auth.views import LoginView
from django.core.paginator import Paginator
from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from apps.core.api import PROBLEM_JSON, ascii_int, json_not_found, problem
from apps.dashboard.auth import Viewer, sign_in_tenant, sign_out, viewer_of, viewer_required
from apps.dashboard.forms import ApiKeySignInForm, StaffSignInForm
from apps.dashboard.selectors import (
    UNSCOPED_ALL_TENANTS,
    Scope,
    Throughput,
    reject_code_counts,
    reject_list,
    tenant_find,
    tenant_options,
    throughput_series,
    upload_find,
    upload_recent,
)
from apps.ingestions.models import Upload

# window name -> (length, buckets): one bar a minute for the last hour, and so on
WINDOWS = {
    "1h": (timedelta(hours=1), 60),
    "6h": (timedelta(hours=6), 72),
    "24h": (timedelta(hours=24), 96),
}
DEFAULT_WINDOW = "1h"
UPLOADS_SHOWN = 50
REJECTS_PER_PAGE = 100
_COUNTS = ("total", "inserted", "updated", "unchanged", "rejected", "pending")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"


def _upload_json(upload: Upload) -> dict:
    size = upload.size_bytes
    if size:
        percent = min(100, upload.bytes_done * 100 // size)
    else:
        percent = 100 if upload.is_terminal else 0
    rows = upload.row_counts
    error = f"{upload.error_code}: {upload.error_detail}" if upload.error_code else ""
    return {
        "id": str(upload.id),
        "state": upload.state,
        "percent": percent,
        "errors_url": reverse("dashboard:errors", kwargs={"upload_id": upload.id}),
        "rows": rows,
        "progress": {
            "bytes_done": upload.bytes_done,
            "rows_done": upload.rows_done,
            "rows_per_second": upload.rows_per_second,
        },
        "cells": {
            "created": _when(upload.created_at),
            "tenant": upload.tenant.name,
            "filename": upload.filename,
            "type": upload.record_type,
            "state": upload.state,
            "error": error,
            "progress": f"{percent}%",
            "bytes": f"{_size(upload.bytes_done)} of {_size(size)}",
            "rows_done": f"{upload.rows_done:,}",
            "rows_per_second": _rate(upload.rows_per_second) if upload.started_at else "",
            **{name: f"{rows[name]:,}" for name in _COUNTS},
        },
    }


def _throughput_json(series: Throughput) -> dict:
    total = sum(rate * series.bucket_seconds for rate in series.rows_per_second)
    peak = max(series.rows_per_second, default=0.0)
    return {
        "start": series.start.isoformat(),
        "end": series.end.isoformat(),
        "bucket_seconds": series.bucket_seconds,
        "rows_per_second": [round(rate, 3) for rate in series.rows_per_second],
        "caption": f"{round(total):,} rows; peak {peak:,.0f} rows/s "
        f"(average over {series.bucket_seconds // 60} min)",
        "start_label": series.start.strftime("%H:%M"),
        "end_label": series.end.strftime("%H:%M UTC"),
    }


class _NotFound(Exception):
    pass


class _BadQuery(Exception):
    """A query parameter with a value it does not take: 400, naming it and what it takes."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _scope(request: HttpRequest, viewer: Viewer) -> tuple[Scope, str]:
    """A tenant sees itself; staff see every tenant, or the one `?tenant=` names."""
    if viewer.tenant is not None:
        return viewer.tenant, ""
    tenant_id = request.GET.get("tenant", "")
    if not tenant_id:
        return UNSCOPED_ALL_TENANTS, ""
    try:
        uuid.UUID(tenant_id)
    except ValueError:
        raise _BadQuery("tenant", f"{tenant_id!r} is not a tenant id (a UUID).") from None
    tenant = tenant_find(tenant_id=tenant_id)
    if tenant is None:
        raise _NotFound
    return tenant, str(tenant.id)


def _overview(request: HttpRequest, viewer: Viewer) -> dict:
    scope, tenant_filter = _scope(request, viewer)
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise _BadQuery("window", f"{window!r} is not one of: {', '.join(WINDOWS)}.")
    length, buckets = WINDOWS[window]
    uploads = upload_recent(tenant=scope, limit=UPLOADS_SHOWN)
    series = throughput_series(tenant=scope, window=length, buckets=buckets, now=timezone.now())
    return {
        "tenant_filter": tenant_filter,
        "window": window,
        "data": {
            "generated_at": _when(timezone.now()),
            "uploads": [_upload_json(u) for u in uploads],
            "reject_codes": [
                {"code": code, "count": n, "label": f"{n:,}"}
                for code, n in reject_code_counts(tenant=scope, uploads=uploads)
            ],
            "throughput": _throughput_json(series),
        },
    }


def _page(view):
    """Private, per-viewer pages: never cached, never framed, and CSRF-protected (their
    sign-out form needs the token of the cookie this sets; no CSRF middleware is on)."""
    return never_cache(xframe_options_deny(csrf_protect(_client_errors(view))))


def _client_errors(view):
    # answered here, as the API's problem+json 404 and 400: an exception escaping a plain
    # view is turned into a 500 by the problem+json middleware
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except _NotFound:
            return json_not_found(request)
        except _BadQuery as exc:
            body = problem(
                400, "Bad request", str(exc), "invalid", errors={exc.name: [exc.message]}
            )
            return JsonResponse(body, status=400, content_type=PROBLEM_JSON)

    return wrapped


@_page
@require_safe
@viewer_required()
def dashboard_index(request: HttpRequest, viewer: Viewer):
    overview = _overview(request, viewer)
    query = {"window": overview["window"]}
    if overview["tenant_filter"]:
        query["tenant"] = overview["tenant_filter"]
    context = {
        "viewer": viewer,
        "data": overview["data"],
        "window": overview["window"],
        "windows": list(WINDOWS),
        "tenant_filter": overview["tenant_filter"],
        "tenants": tenant_options() if viewer.is_staff else [],
        "data_url": f"{reverse('dashboard:data')}?{urlencode(query)}",
    }
    return render(request, "dashboard/index.html", context)


@never_cache
@_client_errors
@require_safe
@viewer_required(json=True)
def dashboard_data(request: HttpRequest, viewer: Viewer):
    return JsonResponse(_overview(request, viewer)["data"])


@_page
@require_safe
@viewer_required()
def upload_errors(request: HttpRequest, viewer: Viewer, upload_id: uuid.UUID):
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    upload = upload_find(tenant=scope, upload_id=upload_id)
    if upload is None:
        raise _NotFound
    paginator = Paginator(reject_list(tenant=scope, upload=upload), REJECTS_PER_PAGE)
    number = ascii_int(request.GET.get("page", "1"))
    if not number:
        raise _BadQuery("page", "Must be a page number from 1.")
    page = paginator.get_page(number)  # past the last page: the last, as a pager expects
    context = {
        "viewer": viewer,
        "upload": _upload_json(upload),
        "codes": [
            {"code": code, "label": f"{n:,}"}
            for code, n in reject_code_counts(tenant=scope, uploads=[upload])
        ],
        "page": page,
        "total": f"{paginator.count:,}",
    }
    return render(request, "dashboard/errors.html", context)


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("dashboard:index")


@_page
@require_http_methods(["GET", "HEAD", "POST"])
def sign_in(request: HttpRequest):
    if request.method == "POST":
        form = ApiKeySignInForm(request.POST)
        if form.is_valid():
            sign_in_tenant(request, tenant=form.tenant, raw_key=form.cleaned_data["api_key"])
            return redirect(_next_url(request))
    elif viewer_of(request) is not None:
        return redirect(_next_url(request))
    else:
        form = ApiKeySignInForm()
    # a refused key re-renders the form with 200: an HTML 4xx would become problem+json
    return render(request, "dashboard/login.html", {"form": form, "next": _next_url(request)})


class StaffSignInView(LoginView):
    """Django's own sign-in view (CSRF-protected, safe `next`), for staff users."""

    template_name = "dashboard/staff_login.html"
    authentication_form = StaffSignInForm

    def get_default_redirect_url(self) -> str:
        return reverse("dashboard:index")


staff_sign_in = xframe_options_deny(StaffSignInView.as_view())


@csrf_protect
@require_POST
def sign_out_view(request: HttpRequest):
    sign_out(request)
    return redirect("dashboard:login")
