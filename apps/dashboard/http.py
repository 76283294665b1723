"""What every dashboard page shares: its protections, its client errors (answered as the
API's problem+json 404 and 400), the scope a viewer sees, and page numbers."""

from __future__ import annotations

import functools

from django.core.paginator import Page, Paginator
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_protect

from apps.core.api import PROBLEM_JSON, ascii_int, json_not_found, problem
from apps.core.ids import uuid_or_none
from apps.dashboard.auth import Viewer
from apps.dashboard.selectors import UNSCOPED_ALL_TENANTS, Scope, tenant_find

PER_PAGE = 100  # rows of a list page (rejects, warnings)


class NotFound(Exception):
    pass


class BadQuery(Exception):
    """A query parameter with a value it does not take: 400, naming it and what it takes."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def page_view(view):
    """Private, per-viewer pages: never cached, never framed, and CSRF-protected (their
    sign-out form needs the token of the cookie this sets; no CSRF middleware is on)."""
    return never_cache(xframe_options_deny(csrf_protect(client_errors(view))))


def client_errors(view):
    # answered here, as the API's problem+json 404 and 400: an exception escaping a plain
    # view is turned into a 500 by the problem+json middleware
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFound:
            return json_not_found(request)
        except BadQuery as exc:
            body = problem(
                400, "Bad request", str(exc), "invalid", errors={exc.name: [exc.message]}
            )
            return JsonResponse(body, status=400, content_type=PROBLEM_JSON)

    return wrapped


def scope_of(request: HttpRequest, viewer: Viewer) -> tuple[Scope, str]:
    """A tenant sees itself; staff see every tenant, or the one `?tenant=` names."""
    if viewer.tenant is not None:
        return viewer.tenant, ""
    tenant_id = request.GET.get("tenant", "")
    if not tenant_id:
        return UNSCOPED_ALL_TENANTS, ""
    if uuid_or_none(tenant_id) is None:
        raise BadQuery("tenant", f"{tenant_id!r} is not a tenant id (a UUID).")
    tenant = tenant_find(tenant_id=tenant_id)
    if tenant is None:
        raise NotFound
    return tenant, str(tenant.id)


def choice(request: HttpRequest, name: str, choices) -> str:
    """A query parameter that is empty or one of `choices`."""
    value = request.GET.get(name, "")
    if value and value not in choices:
        raise BadQuery(name, f"{value!r} is not one of: {', '.join(choices)}.")
    return value


def list_page(request: HttpRequest, paginator: Paginator) -> dict:
    page = page_of(request, paginator, "page")
    return {"page": page, "total": f"{paginator.count:,}"}


def page_of(request: HttpRequest, paginator: Paginator, name: str) -> Page:
    number = ascii_int(request.GET.get(name, "1"))
    if not number:
        raise BadQuery(name, "Must be a page number from 1, of at most 18 digits.")
    return paginator.get_page(number)  # past the last page: the last, as a pager expects
