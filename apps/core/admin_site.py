"""The admin site (/admin/) and the app config that makes it Django's default site, named
in INSTALLED_APPS in place of `django.contrib.admin`. No clickjacking middleware runs (the
API needs none), so its pages refuse framing themselves, as the dashboard's do."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.utils.decorators import method_decorator
from django.views.decorators.clickjacking import xframe_options_deny


class StaffAdminSite(admin.AdminSite):
    site_header = "commerce-ingest admin"
    site_title = "commerce-ingest admin"
    index_title = "Tenants, keys and uploads"
    site_url = "/dashboard/"  # "view site": the monitoring dashboard

    def admin_view(self, view, cacheable=False):
        """Every page but sign-in and sign-out comes through here."""
        return xframe_options_deny(super().admin_view(view, cacheable))

    @method_decorator(xframe_options_deny)
    def login(self, request, extra_context=None):
        return super().login(request, extra_context)

    @method_decorator(xframe_options_deny)
    def logout(self, request, extra_context=None):
        return super().logout(request, extra_context)


class StaffAdminConfig(AdminConfig):
    default_site = "apps.core.admin_site.StaffAdminSite"
