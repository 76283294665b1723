"""The monitoring dashboard: server-rendered pages, and one small JSON document that the page
polls to refresh itself. Every number is formatted once, for both, in `formats`."""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib.auth.views import LoginView
from django.core.paginator import Page, Paginator
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
from apps.dashboard.formats import (
    batch_json,
    batch_rules,
    live_json,
    plural,
    reject_codes_json,
    reject_codes_of,
    rules_json,
    throughput_json,
    upload_json,
    when,
)
from apps.dashboard.forms import ApiKeySignInForm, StaffSignInForm
from apps.dashboard.selectors import (
    UNSCOPED_ALL_TENANTS,
    Scope,
    batch_find,
    batch_recent,
    batch_reject_list,
    live_figures,
    reject_code_counts,
    reject_list,
    rules_by_type,
    tenant_find,
    tenant_options,
    throughput_series,
    upload_find,
    upload_recent,
    warning_list,
    webhook_delivery_find,
    webhooks_of,
)
from apps.webhooks.services import delivery_redeliver

# window name -> (length, buckets): one bar a minute for the last hour, and so on
WINDOWS = {
    "1h": (timedelta(hours=1), 60),
    "6h": (timedelta(hours=6), 72),
    "24h": (timedelta(hours=24), 96),
}
DEFAULT_WINDOW = "1h"
UPLOADS_SHOWN = 50
BATCHES_SHOWN = 50
LIVE_WINDOW = timedelta(minutes=1)  # live records' throughput: the last minute
REJECTS_PER_PAGE = 100


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
    now = timezone.now()
    uploads = upload_recent(tenant=scope, limit=UPLOADS_SHOWN)
    series = throughput_series(tenant=scope, window=length, buckets=buckets, now=now)
    batches = batch_recent(tenant=scope, limit=BATCHES_SHOWN)
    return {
        "tenant_filter": tenant_filter,
        "window": window,
        "data": {
            "generated_at": when(now),
            "uploads": [upload_json(u) for u in uploads],
            "reject_codes": reject_codes_json(reject_code_counts(tenant=scope, uploads=uploads)),
            "throughput": throughput_json(series),
            "batches": [batch_json(b) for b in batches],
            "live": live_json(live_figures(tenant=scope, window=LIVE_WINDOW, now=now)),
            "rules": rules_json(rules_by_type(tenant=scope)),
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
        "webhooks": webhooks_of(tenant=_scope(request, viewer)[0]),
    }
    return render(request, "dashboard/index.html", context)


@_page
@require_POST
@viewer_required()
def webhook_redeliver(request: HttpRequest, viewer: Viewer, delivery_id: int):
    """Send a delivery's event again (a new delivery), then back to the webhooks card."""
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    delivery = webhook_delivery_find(tenant=scope, delivery_id=delivery_id)
    if delivery is None:
        raise _NotFound
    delivery_redeliver(delivery=delivery)
    query = "" if viewer.tenant else "?" + urlencode({"tenant": delivery.endpoint.tenant_id})
    return redirect(reverse("dashboard:index") + query + "#webhooks")


@never_cache
@_client_errors
@require_safe
@viewer_required(json=True)
def dashboard_data(request: HttpRequest, viewer: Viewer):
    return JsonResponse(_overview(request, viewer)["data"])


def _viewers_upload(viewer: Viewer, upload_id: uuid.UUID):
    """The scope the viewer sees (a tenant, or all of them for staff) and the upload in it;
    404 when it is not there."""
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    upload = upload_find(tenant=scope, upload_id=upload_id)
    if upload is None:
        raise _NotFound
    return scope, upload


@_page
@require_safe
@viewer_required()
def upload_errors(request: HttpRequest, viewer: Viewer, upload_id: uuid.UUID):
    scope, upload = _viewers_upload(viewer, upload_id)
    paginator = Paginator(reject_list(tenant=scope, upload=upload), REJECTS_PER_PAGE)
    context = {
        "viewer": viewer,
        "upload": upload_json(upload),
        "codes": reject_codes_json(reject_code_counts(tenant=scope, uploads=[upload])),
        **_list_page(request, paginator),
    }
    return render(request, "dashboard/errors.html", context)


@_page
@require_safe
@viewer_required()
def upload_warnings(request: HttpRequest, viewer: Viewer, upload_id: uuid.UUID):
    scope, upload = _viewers_upload(viewer, upload_id)
    warnings = warning_list(tenant=scope, upload=upload)
    context = {
        "viewer": viewer,
        "upload": upload_json(upload),
        **_list_page(request, Paginator(warnings, REJECTS_PER_PAGE)),
    }
    return render(request, "dashboard/warnings.html", context)


@_page
@require_safe
@viewer_required()
def batch_errors(request: HttpRequest, viewer: Viewer, batch_id: int):
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    batch = batch_find(tenant=scope, batch_id=batch_id)
    if batch is None:
        raise _NotFound
    rejects = batch_reject_list(tenant=scope, batch=batch)
    warnings = _page_of(request, Paginator(batch.warnings, REJECTS_PER_PAGE), "warnings_page")
    context = {
        "viewer": viewer,
        "batch": batch_json(batch),
        "merged": when(batch.merged_at),
        "codes": reject_codes_of(rejects),
        "rules": batch_rules(batch.rules),
        "warnings_page": warnings,
        "warnings_total": f"{warnings.paginator.count:,}",
        "warned": plural(warnings.paginator.count, "record"),
        **_list_page(request, Paginator(rejects, REJECTS_PER_PAGE)),
    }
    return render(request, "dashboard/batch_errors.html", context)


def _list_page(request: HttpRequest, paginator: Paginator) -> dict:
    page = _page_of(request, paginator, "page")
    return {"page": page, "total": f"{paginator.count:,}"}


def _page_of(request: HttpRequest, paginator: Paginator, name: str) -> Page:
    number = ascii_int(request.GET.get(name, "1"))
    if not number:
        raise _BadQuery(name, "Must be a page number from 1.")
    return paginator.get_page(number)  # past the last page: the last, as a pager expects


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
