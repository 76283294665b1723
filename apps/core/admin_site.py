"""The admin site (/admin/) and the app config that makes it Django's default site, named
in INSTALLED_APPS in place of `django.contrib.admin`. No clickjacking middleware runs (the
API needs none), so its pages refuse framing themselves, as the dashboard's do."""

from __future__ import annotations

from functools import wraps

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.db import DataError
from django.http import HttpResponseBadRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.clickjacking import xframe_options_deny


class StaffAdminSite(admin.AdminSite):
    site_header = "commerce-ingest admin"
    site_title = "commerce-ingest admin"
    index_title = "Tenants, keys and uploads"
    site_url = "/dashboard/"  # "view site": the monitoring dashboard

    def admin_view(self, view, cacheable=False):
        """Every page but sign-in and sign-out comes through here."""
        return xframe_options_deny(super().admin_view(_refusing_bad_queries(view), cacheable))

    @method_decorator(xframe_options_deny)
    def login(self, request, extra_context=None):
        # Django sends signed-in staff on to the index for a GET only: a HEAD got the
        # form's 200 where its GET gets a 302
        if request.method == "HEAD" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        return super().login(request, extra_context)

    @method_decorator(xframe_options_deny)
    def logout(self, request, extra_context=None):
        return super().logout(request, extra_context)


def _refusing_bad_queries(view):
    """A page whose query the database cannot run is a 400, not a 500: PostgreSQL stores no
    NUL in text, and refuses an invalid regular expression (`?name__regex=(`) or a year
    past its calendar (`?created_at__year=99999999999`), in every model's list, Django's
    own users and groups included."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        if any("\x00" in key or "\x00" in "".join(values) for key, values in request.GET.lists()):
            return HttpResponseBadRequest("A filter or search holds a NUL character.")
        try:
            response = view(request, *args, **kwargs)
            if getattr(response, "is_rendered", True) is False:
                response.render()  # its queries run now, inside this guard
        except (DataError, OverflowError) as exc:
            return HttpResponseBadRequest(f"The database cannot run this filter: {exc}")
        return response

    return guarded


class StaffAdminConfig(AdminConfig):
    default_site = "apps.core.admin_site.StaffAdminSite"
