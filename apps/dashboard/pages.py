"""The dashboard's pages about one thing: an upload (its detail, its rejected rows, its
warnings), a live batch's errors, and the rejected rows of one code."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpRequest
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from apps.dashboard.auth import Viewer, viewer_required
from apps.dashboard.formats import (
    batch_json,
    batch_rules,
    plural,
    reject_codes_json,
    reject_codes_of,
    upload_json,
    upload_timings,
    when,
)
from apps.dashboard.http import (
    PER_PAGE,
    BadQuery,
    NotFound,
    choice,
    list_page,
    page_of,
    page_view,
    scope_of,
)
from apps.dashboard.selectors import (
    UNSCOPED_ALL_TENANTS,
    batch_find,
    batch_reject_list,
    reject_code_counts,
    reject_list,
    reject_list_of_code,
    upload_find,
    upload_recent,
    warning_list,
)
from apps.ingestions.presenters import REJECT_CODES

SHOWN_ON_DETAIL = 10  # rejected rows and warnings on an upload's page; the rest on theirs
RECENT_UPLOADS = 50  # the uploads a code's rows are looked for in: those the index lists


def _viewers_upload(viewer: Viewer, upload_id: uuid.UUID):
    """The scope the viewer sees (a tenant, or all of them for staff) and the upload in it;
    404 when it is not there."""
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    upload = upload_find(tenant=scope, upload_id=upload_id)
    if upload is None:
        raise NotFound
    return scope, upload


def _codes(scope, upload) -> list[dict]:
    """The upload's rejected rows by code, each linking to its rows."""
    errors = reverse("dashboard:errors", kwargs={"upload_id": upload.id})
    codes = reject_codes_json(reject_code_counts(tenant=scope, uploads=[upload]))
    return [{**c, "url": f"{errors}?{urlencode({'code': c['code']})}"} for c in codes]


def _first(rows) -> dict:
    """The first rows of a list, for a page that links to the whole list."""
    paginator = Paginator(rows, SHOWN_ON_DETAIL)
    return {"page": paginator.page(1), "total": f"{paginator.count:,}"}


@page_view
@require_safe
@viewer_required()
def upload_detail(request: HttpRequest, viewer: Viewer, upload_id: uuid.UUID):
    scope, upload = _viewers_upload(viewer, upload_id)
    rejects = reject_list(tenant=scope, upload=upload)
    warnings = warning_list(tenant=scope, upload=upload)
    context = {
        "viewer": viewer,
        "upload": upload_json(upload),
        "timings": upload_timings(upload),
        "codes": _codes(scope, upload),
        "rejects": _first(rejects),
        "warnings": _first(warnings),
    }
    return render(request, "dashboard/upload.html", context)


@page_view
@require_safe
@viewer_required()
def upload_errors(request: HttpRequest, viewer: Viewer, upload_id: uuid.UUID):
    scope, upload = _viewers_upload(viewer, upload_id)
    code = choice(request, "code", REJECT_CODES)
    paginator = Paginator(reject_list(tenant=scope, upload=upload, code=code), PER_PAGE)
    context = {
        "viewer": viewer,
        "upload": upload_json(upload),
        "codes": _codes(scope, upload),
        "code": code,
        "query": urlencode({"code": code}) + "&" if code else "",
        **list_page(request, paginator),
    }
    return render(request, "dashboard/errors.html", context)


@page_view
@require_safe
@viewer_required()
def upload_warnings(request: HttpRequest, viewer: Viewer, upload_id: uuid.UUID):
    scope, upload = _viewers_upload(viewer, upload_id)
    warnings = warning_list(tenant=scope, upload=upload)
    context = {
        "viewer": viewer,
        "upload": upload_json(upload),
        **list_page(request, Paginator(warnings, PER_PAGE)),
    }
    return render(request, "dashboard/warnings.html", context)


@page_view
@require_safe
@viewer_required()
def code_rejects(request: HttpRequest, viewer: Viewer):
    """The rejected rows of one code in the uploads the index lists (its codes card links
    here), each with its file."""
    scope, tenant_filter = scope_of(request, viewer)
    code = choice(request, "code", REJECT_CODES)
    if not code:
        raise BadQuery("code", f"Name a reject code: one of {', '.join(REJECT_CODES)}.")
    uploads = upload_recent(tenant=scope, limit=RECENT_UPLOADS)
    rejects = reject_list_of_code(tenant=scope, uploads=uploads, code=code)
    query = {"code": code, **({"tenant": tenant_filter} if tenant_filter else {})}
    context = {
        "viewer": viewer,
        "code": code,
        "query": urlencode(query) + "&",
        **list_page(request, Paginator(rejects, PER_PAGE)),
    }
    return render(request, "dashboard/code_rejects.html", context)


@page_view
@require_safe
@viewer_required()
def batch_errors(request: HttpRequest, viewer: Viewer, batch_id: int):
    scope = viewer.tenant or UNSCOPED_ALL_TENANTS
    batch = batch_find(tenant=scope, batch_id=batch_id)
    if batch is None:
        raise NotFound
    rejects = batch_reject_list(tenant=scope, batch=batch)
    warnings = page_of(request, Paginator(batch.warnings, PER_PAGE), "warnings_page")
    context = {
        "viewer": viewer,
        "batch": batch_json(batch),
        "merged": when(batch.merged_at),
        "codes": reject_codes_of(rejects),
        "rules": batch_rules(batch.rules),
        "warnings_page": warnings,
        "warnings_total": f"{warnings.paginator.count:,}",
        "warned": plural(warnings.paginator.count, "record"),
        **list_page(request, Paginator(rejects, PER_PAGE)),
    }
    return render(request, "dashboard/batch_errors.html", context)
