"""The Django admin's shared pieces (/admin/, for staff; the site is `admin_site`): the base
of every model admin here. Staff read everything, as on the dashboard; nothing is added,
changed or deleted through a form, since that would bypass the services: the few writes
the admin offers (a tenant, a key issued or revoked) are actions that call them."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.utils.functional import cached_property


def is_staff(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.is_staff


def choices_filter(field: str, values: list[str] | tuple[str, ...]) -> type:
    """A list filter offering fixed values: Django's own for a field without choices reads
    every distinct value (a scan of the whole table) on each page."""

    class ChoicesFilter(admin.SimpleListFilter):
        title = field.replace("_", " ")
        parameter_name = field

        def lookups(self, request, model_admin):
            return [(value, value) for value in values]

        def queryset(self, request, queryset):
            return queryset.filter(**{field: self.value()}) if self.value() else queryset

    return ChoicesFilter


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows (a COUNT(*) of millions of rejects takes seconds): a longer
    list shows CAP rows' worth of pages; a filter narrows it."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP].count()


class StaffReadOnlyAdmin(admin.ModelAdmin):
    """Any active staff user may list and view; no one adds, changes or deletes."""

    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) of the whole table (rejects are many)

    def has_module_permission(self, request) -> bool:
        return is_staff(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_staff(request)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        """A row's id finds that row (an index lookup, not a scan of every id as text);
        anything else searches the `search_fields`."""
        term = search_term.strip()
        try:
            pk = self.opts.pk.to_python(term) if term else None
        except ValidationError:
            pk = None
        if pk is not None and queryset.filter(pk=pk).exists():
            return queryset.filter(pk=pk), False
        return super().get_search_results(request, queryset, search_term)


class StaffReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_view_permission(self, request, obj=None) -> bool:
        return is_staff(request)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
