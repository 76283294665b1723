"""Tenants and their API keys in the Django admin. A key shows its public prefix and its
dates, never its secret or the secret's hash. Creating a tenant and issuing or revoking keys
go through the services; a new key is shown once, on the page that answers the action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from apps.core.admin import StaffReadOnlyAdmin, StaffReadOnlyInline, is_staff
from apps.core.errors import ApplicationError, NotFoundError
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import IssuedKey, api_key_revoke, api_key_rotate, tenant_create

KEY_FIELDS = ("shown_prefix", "created_at", "last_used_at", "revoked_at")  # never key_hash


def _shown_prefix(key: ApiKey) -> str:
    return f"ck_{key.prefix}_…"


def _can_manage_keys(request) -> bool:
    return is_staff(request) and request.user.has_perm("tenants.change_apikey")


class ApiKeyInline(StaffReadOnlyInline):
    model = ApiKey
    fields = readonly_fields = KEY_FIELDS
    ordering = ["-created_at"]

    @admin.display(description="key")
    def shown_prefix(self, key: ApiKey) -> str:
        return _shown_prefix(key)


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() in ("active", "revoked"):
            return queryset.filter(revoked_at__isnull=self.value() == "active")
        return queryset


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Unique, ignoring case.")


@admin.register(Tenant)
class TenantAdmin(StaffReadOnlyAdmin):
    list_display = ["name", "id", "created_at", "is_active", "active_keys"]
    list_filter = ["is_active"]
    search_fields = ["name"]  # and the id
    ordering = ["created_at", "id"]
    fields = readonly_fields = ["id", "name", "is_active", "created_at", "updated_at"]
    inlines = [ApiKeyInline]
    actions = ["issue_key_revoking_others", "issue_additional_key"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_active_keys=Count("api_keys", filter=Q(api_keys__revoked_at=None)))
        )

    @admin.display(description="active keys", ordering="_active_keys")
    def active_keys(self, tenant: Tenant) -> int:
        return tenant._active_keys

    def has_add_permission(self, request) -> bool:
        return is_staff(request) and request.user.has_perm("tenants.add_tenant")

    def has_manage_keys_permission(self, request) -> bool:
        return _can_manage_keys(request)

    def add_view(self, request, form_url="", extra_context=None):
        """A name in, `tenant_create` called, the first key shown once."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = TenantCreateForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                tenant, issued = tenant_create(name=form.cleaned_data["name"])
            except ApplicationError as exc:  # a taken name, also one taken a moment ago
                form.add_error("name", exc.detail)
            else:
                self.log_addition(request, tenant, [{"added": {}}])
                return self._issued_page(request, [(tenant, issued)], title="Tenant created")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add tenant",
            "form": form,
        }
        return TemplateResponse(request, "admin/tenants/tenant/create.html", context)

    @admin.action(
        description="Issue a new key for the selected tenants, revoking their other keys",
        permissions=["manage_keys"],
    )
    def issue_key_revoking_others(self, request, queryset):
        if request.POST.get("confirmed") != "yes":
            return confirm_page(
                self,
                request,
                queryset,
                action="issue_key_revoking_others",
                question="Issue a new key for these tenants? Their current keys stop working "
                "at once.",
            )
        return self._rotate(request, queryset, revoke_existing=True)

    @admin.action(
        description="Issue an additional key for the selected tenants (others keep working)",
        permissions=["manage_keys"],
    )
    def issue_additional_key(self, request, queryset):
        return self._rotate(request, queryset, revoke_existing=False)

    def _rotate(self, request, queryset, *, revoke_existing: bool):
        issued = []
        for tenant in queryset.order_by("name"):
            key = api_key_rotate(tenant=tenant, revoke_existing=revoke_existing)
            revoked = " and revoked the other keys" if revoke_existing else ""
            self.log_change(request, tenant, f"Issued key {_shown_prefix(key.api_key)}{revoked}.")
            issued.append((tenant, key))
        return self._issued_page(request, issued, title="Keys issued")

    def _issued_page(self, request, issued: list[tuple[Tenant, IssuedKey]], *, title: str):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "issued": issued,
        }
        # never cached: the admin's views are wrapped in never_cache
        return TemplateResponse(request, "admin/tenants/issued_keys.html", context)


@admin.register(ApiKey)
class ApiKeyAdmin(StaffReadOnlyAdmin):
    list_display = ["shown_prefix", "tenant_link", "created_at", "last_used_at", "revoked_at"]
    list_filter = [KeyStatusFilter]
    list_select_related = ["tenant"]
    search_fields = ["prefix", "tenant__name"]
    ordering = ["-created_at"]
    fields = readonly_fields = ["tenant", *KEY_FIELDS]
    actions = ["revoke_selected"]

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, key: ApiKey) -> str:
        return _shown_prefix(key)

    @admin.display(description="tenant", ordering="tenant__name")
    def tenant_link(self, key: ApiKey) -> str:
        url = reverse("admin:tenants_tenant_change", args=[key.tenant_id])
        return format_html('<a href="{}">{}</a>', url, key.tenant.name)

    def has_manage_keys_permission(self, request) -> bool:
        return _can_manage_keys(request)

    @admin.action(description="Revoke the selected keys", permissions=["manage_keys"])
    def revoke_selected(self, request, queryset):
        if request.POST.get("confirmed") != "yes":
            return confirm_page(
                self,
                request,
                queryset,
                action="revoke_selected",
                question="Revoke these keys? Requests with them are refused at once.",
            )
        revoked = skipped = 0
        for key in queryset.select_related("tenant"):
            try:
                api_key_revoke(tenant=key.tenant, prefix=key.prefix)
            except NotFoundError:  # revoked already
                skipped += 1
                continue
            self.log_change(request, key, "Revoked.")
            revoked += 1
        already = f"; {skipped} already revoked" if skipped else ""
        self.message_user(request, f"Revoked {revoked} key(s){already}.", messages.SUCCESS)
        return None


def confirm_page(model_admin, request, queryset, *, action: str, question: str):
    """The page that asks before an action that cannot be undone (as Django's delete does)."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Are you sure?",
        "question": question,
        "objects": list(queryset),
        "action": action,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/tenants/confirm_action.html", context)
