"""The monitoring dashboard's overview: the page, and one small JSON document that the page
polls to refresh itself (every number formatted once, for both, in `formats`); and signing
in and out. The pages about one upload or batch are in `pages`."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from apps.dashboard.auth import Viewer, sign_in_tenant, sign_out, viewer_of, viewer_required
from apps.dashboard.formats import (
    batch_json,
    live_json,
    reject_codes_json,
    rules_json,
    session_json,
    tenant_summary_json,
    throughput_json,
    upload_json,
    when,
)
from apps.dashboard.forms import ApiKeySignInForm, StaffSignInForm
from apps.dashboard.http import BadQuery, NotFound, choice, client_errors, page_view, scope_of
from apps.dashboard.sales import sales_of
from apps.dashboard.selectors import (
    UNSCOPED_ALL_TENANTS,
    UploadFilter,
    batch_recent,
    live_figures,
    reject_code_counts,
    rules_by_type,
    session_receiving,
    tenant_options,
    tenant_summaries,
    throughput_series,
    upload_recent,
    webhook_delivery_find,
    webhooks_of,
)
from apps.ingestions.models import RecordType, UploadState
from apps.webhooks.services import delivery_redeliver

# window name -> (length, buckets): a bar every 5 s over the last 15 minutes, every 10 s
# over the last hour, and so on (an upload of a million rows takes seconds, not minutes)
WINDOWS = {
    "15m": (timedelta(minutes=15), 180),
    "1h": (timedelta(hours=1), 360),
    "6h": (timedelta(hours=6), 360),
    "24h": (timedelta(hours=24), 288),
}
DEFAULT_WINDOW = "1h"
UPLOADS_SHOWN = 50
BATCHES_SHOWN = 50
LIVE_WINDOW = timedelta(minutes=1)  # live records' throughput: the last minute


def _filters(request: HttpRequest) -> UploadFilter:
    filename = request.GET.get("file", "").strip()
    if len(filename) > 255 or "\x00" in filename:
        raise BadQuery("file", "Must be at most 255 characters, without NUL.")
    return UploadFilter(
        state=choice(request, "state", UploadState.values),
        record_type=choice(request, "type", RecordType.values),
        filename=filename,
    )


def _overview(request: HttpRequest, viewer: Viewer, *, sales: bool = True) -> dict:
    scope, tenant_filter = scope_of(request, viewer)
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise BadQuery("window", f"{window!r} is not one of: {', '.join(WINDOWS)}.")
    only = _filters(request)
    length, buckets = WINDOWS[window]
    now = timezone.now()
    uploads = upload_recent(tenant=scope, limit=UPLOADS_SHOWN, only=only)
    series = throughput_series(tenant=scope, window=length, buckets=buckets, now=now)
    batches = batch_recent(tenant=scope, limit=BATCHES_SHOWN)
    summaries = tenant_summaries(tenant=scope)
    return {
        "tenant_filter": tenant_filter,
        "window": window,
        "filters": only,
        "data": {
            "generated_at": when(now),
            "uploads": [upload_json(u) for u in uploads],
            "receiving": [session_json(s) for s in session_receiving(tenant=scope, now=now)],
            "reject_codes": _code_links(
                reject_codes_json(reject_code_counts(tenant=scope, uploads=uploads)),
                tenant_filter,
            ),
            "throughput": throughput_json(series),
            "batches": [batch_json(b) for b in batches],
            "live": live_json(live_figures(tenant=scope, window=LIVE_WINDOW, now=now)),
            "rules": rules_json(rules_by_type(tenant=scope)),
            "tenants": None if summaries is None else [tenant_summary_json(s) for s in summaries],
            # a tenant's sales: on the page, and in every SALES_EVERY-th refresh (dashboard.js)
            "sales": sales_of(tenant=scope)
            if sales and scope is not UNSCOPED_ALL_TENANTS
            else None,
        },
    }


def _code_links(codes: list[dict], tenant_filter: str) -> list[dict]:
    """Each code with the page of its rows (in the uploads the index lists)."""
    page = reverse("dashboard:rejects")
    for c in codes:
        query = {"code": c["code"], **({"tenant": tenant_filter} if tenant_filter else {})}
        c["url"] = f"{page}?{urlencode(query)}"
    return codes


def _query(overview: dict) -> dict:
    """The page's own query: what its JSON document is asked with."""
    only = overview["filters"]
    query = {"window": overview["window"], "tenant": overview["tenant_filter"]}
    query.update(state=only.state, type=only.record_type, file=only.filename)
    return {name: value for name, value in query.items() if value}


@page_view
@require_safe
@viewer_required()
def dashboard_index(request: HttpRequest, viewer: Viewer):
    overview = _overview(request, viewer)
    context = {
        "viewer": viewer,
        "data": overview["data"],
        "window": overview["window"],
        "windows": list(WINDOWS),
        "filters": overview["filters"],
        "states": UploadState.values,
        "types": RecordType.values,
        "tenant_filter": overview["tenant_filter"],
        "tenants": tenant_options() if viewer.is_staff else [],
        "data_url": f"{reverse('dashboard:data')}?{urlencode(_query(overview))}",
        "webhooks": webhooks_of(tenant=scope_of(request, viewer)[0]),
    }
    return render(request, "dashboard/index.html", context)


@page_view
@require_POST
@viewer_required()
def webhook_redeliver(request: HttpRequest, viewer: Viewer, delivery_id: int):
    """Send a delivery's event again (a new delivery), then back to the webhooks card."""
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    delivery = webhook_delivery_find(tenant=scope, delivery_id=delivery_id)
    if delivery is None:
        raise NotFound
    delivery_redeliver(delivery=delivery)
    query = "" if viewer.tenant else "?" + urlencode({"tenant": delivery.endpoint.tenant_id})
    return redirect(reverse("dashboard:index") + query + "#webhooks")


@never_cache
@client_errors
@require_safe
@viewer_required(json=True)
def dashboard_data(request: HttpRequest, viewer: Viewer):
    sales = request.GET.get("sales") == "1"
    return JsonResponse(_overview(request, viewer, sales=sales)["data"])


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("dashboard:index")


@page_view
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
