"""Who is looking at the dashboard: a tenant signed in with one of its API keys (the session
keeps the tenant id and the key's public prefix, never the key), or a staff user signed in
with Django's auth, who sees every tenant."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib.auth import logout
from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from apps.core.api import PROBLEM_JSON, problem
from apps.dashboard.selectors import tenant_of_signed_in_key
from apps.tenants.models import Tenant

SESSION_TENANT = "dashboard_tenant_id"
SESSION_KEY_PREFIX = "dashboard_key_prefix"


@dataclass(frozen=True)
class Viewer:
    name: str
    tenant: Tenant | None  # None: a staff member, who may look at every tenant

    @property
    def is_staff(self) -> bool:
        return self.tenant is None


def viewer_of(request: HttpRequest) -> Viewer | None:
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return Viewer(name=user.get_username(), tenant=None)
    tenant_id = request.session.get(SESSION_TENANT)
    prefix = request.session.get(SESSION_KEY_PREFIX)
    if tenant_id and prefix:
        tenant = tenant_of_signed_in_key(tenant_id=tenant_id, key_prefix=prefix)
        if tenant is not None:
            return Viewer(name=tenant.name, tenant=tenant)
    return None


def sign_in_tenant(request: HttpRequest, *, tenant: Tenant, raw_key: str) -> None:
    """Start a fresh session for the tenant (flushed, so a new session id: no fixation).
    The raw key has been checked by the caller and is not kept."""
    logout(request)  # flushes any earlier session, staff or tenant
    request.session[SESSION_TENANT] = str(tenant.id)
    request.session[SESSION_KEY_PREFIX] = raw_key.split("_", 2)[1]


def sign_out(request: HttpRequest) -> None:
    logout(request)


def viewer_required(*, json: bool = False):
    """Pass the viewer to the view; without one, send a page to the sign-in form (back to
    it afterwards) and answer a JSON request 401."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            viewer = viewer_of(request)
            if viewer is None:
                if json:
                    body = problem(401, "Unauthorized", "Sign in first.", "not_signed_in")
                    return JsonResponse(body, status=401, content_type=PROBLEM_JSON)
                login = reverse("dashboard:login")
                return redirect(f"{login}?{urlencode({'next': request.get_full_path()})}")
            return view(request, viewer, *args, **kwargs)

        return wrapped

    return decorate
