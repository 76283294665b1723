"""The Django admin at /admin/, for staff: tenants and their keys (shown by prefix and dates,
never their secret or its hash), created, issued and revoked through the services; who gets
in; what the site as a whole does (static files, framing, error pages). The ingestion
models' pages: tests/ingestions/test_admin.py."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import api_key_revoke, api_key_rotate, tenant_create, tenant_from_api_key
from tests.factories import STAFF_PASSWORD as PASSWORD
from tests.factories import page_text as _html
from tests.factories import signed_in, staff_user

ISSUED_KEY = re.compile(r'<code class="issued-key">(ck_[^<]+)</code>')


@pytest.fixture
def staff(db) -> Client:
    """A staff member with no permissions granted: reads everything, changes nothing."""
    return signed_in(staff_user("reader", staff=True))


@pytest.fixture
def manager(db) -> Client:
    """A staff member who may add tenants and issue and revoke keys."""
    return signed_in(staff_user("keeper", staff=True, perms=("add_tenant", "change_apikey")))


def _keys_of_a_tenant():
    """Acme with a revoked key, a used key and a key never used."""
    tenant, revoked = tenant_create(name="Acme")
    used = api_key_rotate(tenant=tenant, revoke_existing=True)
    fresh = api_key_rotate(tenant=tenant, revoke_existing=False)
    assert tenant_from_api_key(raw_key=used.raw) == tenant  # marks it used
    return tenant, revoked, used, fresh


def test_staff_see_each_keys_prefix_and_dates_but_never_its_secret_or_hash(staff):
    """The key list, a key's page, its tenant's page and their histories show the prefix,
    created, last used and revoked, and no page holds a secret or a hash."""
    tenant, revoked, used, fresh = _keys_of_a_tenant()
    key_list = _html(staff.get("/admin/tenants/apikey/"))
    for issued in (revoked, used, fresh):
        assert f"ck_{issued.api_key.prefix}_…" in key_list
    used_row = ApiKey.objects.get(prefix=used.api_key.prefix)
    assert used_row.last_used_at is not None
    assert ApiKey.objects.get(prefix=revoked.api_key.prefix).revoked_at is not None
    for heading in ("Created at", "Last used at", "Revoked at"):
        assert heading in key_list
    pages = [
        key_list,
        _html(staff.get(f"/admin/tenants/apikey/{used_row.id}/change/")),
        _html(staff.get(f"/admin/tenants/apikey/{used_row.id}/history/")),
        _html(staff.get(f"/admin/tenants/tenant/{tenant.id}/change/")),
        _html(staff.get(f"/admin/tenants/apikey/?q={used.api_key.prefix}")),
    ]
    for issued in (revoked, used, fresh):
        secret = issued.raw.split("_", 2)[2]
        for page in pages:
            assert secret not in page
            assert issued.api_key.key_hash not in page
    assert f"ck_{fresh.api_key.prefix}_…" in pages[3]  # the tenant's keys, inline


def test_the_key_list_filters_revoked_and_active_keys(staff):
    """Status: the active keys, or the revoked ones."""
    _, revoked, used, fresh = _keys_of_a_tenant()
    active = _html(staff.get("/admin/tenants/apikey/?status=active"))
    gone = _html(staff.get("/admin/tenants/apikey/?status=revoked"))
    assert f"ck_{fresh.api_key.prefix}_" in active
    assert f"ck_{revoked.api_key.prefix}_" not in active
    assert f"ck_{revoked.api_key.prefix}_" in gone
    assert f"ck_{used.api_key.prefix}_" not in gone


def test_no_one_but_signed_in_staff_gets_in(db):
    """Anonymous visitors and signed-in users who are not staff go to the sign-in page."""
    clerk = signed_in(staff_user("clerk", staff=False))
    for client in (Client(), clerk):
        response = client.get("/admin/tenants/apikey/")
        assert response.status_code == 302
        assert response["Location"] == "/admin/login/?next=/admin/tenants/apikey/"


def test_head_of_the_sign_in_page_answers_as_its_get_does(db):
    """Signed-in staff are sent on to the index by a GET of the sign-in page, and by a
    HEAD too (it answered the form's 200); anyone else gets the form either way."""
    client = Client()
    client.force_login(staff_user("ops", staff=True))
    for method in (client.get, client.head):
        response = method("/admin/login/")
        assert (response.status_code, response["Location"]) == (302, "/admin/")
    anonymous = Client()
    assert [
        anonymous.get("/admin/login/").status_code,
        anonymous.head("/admin/login/").status_code,
    ] == [
        200,
        200,
    ]


def test_staff_sign_in_with_djangos_form_and_others_are_refused(db):
    """The admin's sign-in form (CSRF-checked) lets a staff user in, not anyone else."""
    staff_user("ops", staff=True)
    staff_user("clerk", staff=False)
    for username, lets_in in (("clerk", False), ("ops", True)):
        client = Client(enforce_csrf_checks=True)
        assert client.get("/admin/login/").status_code == 200
        response = client.post(
            "/admin/login/?next=/admin/",
            {
                "username": username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
            },
        )
        if lets_in:
            assert (response.status_code, response["Location"]) == (302, "/admin/")
            assert "Tenants, keys and uploads" in _html(client.get("/admin/"))
        else:
            refused = _html(response)
            assert "enter the correct username and password for a staff account" in refused


def test_a_staff_sign_in_on_the_dashboard_opens_the_admin_too(db):
    """One sign-in: the dashboard's staff form and the admin share Django's session."""
    staff_user("ops", staff=True)
    client = Client(enforce_csrf_checks=True)
    client.get("/dashboard/staff/login/")
    client.post(
        "/dashboard/staff/login/",
        {
            "username": "ops",
            "password": PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert client.get("/admin/tenants/tenant/").status_code == 200


def test_the_admins_static_files_are_served(db, client):
    """WhiteNoise serves the admin's stylesheets and scripts (no collectstatic needed)."""
    for path in ("/static/admin/css/base.css", "/static/admin/js/actions.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        response.close()


def test_keys_and_tenants_are_never_changed_or_deleted_through_a_form(db, tenant):
    """A superuser changes no tenant or key by form and deletes none."""
    root = signed_in(get_user_model().objects.create_superuser("root", password=PASSWORD))
    key = ApiKey.objects.get(tenant=tenant)
    for path in (f"/admin/tenants/tenant/{tenant.id}/", f"/admin/tenants/apikey/{key.id}/"):
        assert root.post(f"{path}change/", {"name": "Renamed"}).status_code == 403
        assert root.post(f"{path}delete/", {"post": "yes"}).status_code == 403
    assert root.get("/admin/tenants/apikey/add/").status_code == 403
    assert Tenant.objects.get(id=tenant.id).name == "Acme"


def test_adding_a_tenant_creates_it_through_the_service_and_shows_its_key_once(manager):
    """The add form calls `tenant_create`: the page shows the new key, which works; the key
    is stored hashed; a name taken in another case is a form error, nothing is created."""
    page = _html(manager.post("/admin/tenants/tenant/add/", {"name": "  Initech "}))
    tenant = Tenant.objects.get(name="Initech")
    raw = ISSUED_KEY.search(page)[1]
    assert tenant_from_api_key(raw_key=raw) == tenant
    assert "shown only this once" in page
    refused = _html(manager.post("/admin/tenants/tenant/add/", {"name": "INITECH"}))
    assert "already exists" in refused
    assert "list_tenants" in refused
    assert Tenant.objects.count() == 1
    assert "Add tenant" in _html(manager.get("/admin/tenants/tenant/add/"))


def test_staff_without_the_permission_cannot_add_a_tenant(staff):
    """Adding needs `tenants.add_tenant`: without it, 403 and no add button."""
    assert staff.post("/admin/tenants/tenant/add/", {"name": "Initech"}).status_code == 403
    assert "/admin/tenants/tenant/add/" not in _html(staff.get("/admin/tenants/tenant/"))
    assert not Tenant.objects.exists()


def _act(client: Client, path: str, action: str, ids, *, follow=False, **extra):
    data = {"action": action, "_selected_action": [str(i) for i in ids], **extra}
    return client.post(path, data, follow=follow)


def test_revoking_selected_keys_asks_first_then_revokes_through_the_service(manager):
    """The action shows what it will revoke; confirmed, those keys stop working, others
    (another tenant's too) keep working, and an already revoked key is counted apart."""
    tenant, revoked, used, fresh = _keys_of_a_tenant()
    _, others = tenant_create(name="Globex")
    picked = [used.api_key.id, revoked.api_key.id]
    asked = _html(_act(manager, "/admin/tenants/apikey/", "revoke_selected", picked))
    assert "Revoke these keys?" in asked
    assert tenant_from_api_key(raw_key=used.raw) == tenant
    done = _act(
        manager, "/admin/tenants/apikey/", "revoke_selected", picked, confirmed="yes", follow=True
    )
    assert "Revoked 1 key(s); 1 already revoked." in _html(done)
    assert tenant_from_api_key(raw_key=used.raw) is None
    assert tenant_from_api_key(raw_key=fresh.raw) == tenant
    assert tenant_from_api_key(raw_key=others.raw) is not None


def test_staff_without_the_permission_are_not_offered_key_actions(staff):
    """Issuing and revoking need `tenants.change_apikey`: others are not offered the
    actions, and posting one changes nothing."""
    tenant, _, used, _ = _keys_of_a_tenant()
    assert "revoke_selected" not in _html(staff.get("/admin/tenants/apikey/"))
    assert "issue_key_revoking_others" not in _html(staff.get("/admin/tenants/tenant/"))
    for path, action, picked in (
        ("/admin/tenants/apikey/", "revoke_selected", used.api_key.id),
        ("/admin/tenants/tenant/", "issue_key_revoking_others", tenant.id),
    ):
        assert _act(staff, path, action, [picked], confirmed="yes").status_code == 200
    assert tenant_from_api_key(raw_key=used.raw) == tenant
    assert ApiKey.objects.filter(tenant=tenant).count() == 3


def test_issuing_a_key_from_the_tenant_list(manager):
    """Issuing a new key asks first, then shows each new key once and revokes the old
    ones; an additional key leaves the old ones working."""
    tenant, old = tenant_create(name="Acme")
    asked = _html(_act(manager, "/admin/tenants/tenant/", "issue_key_revoking_others", [tenant.id]))
    assert "Their current keys stop working at once." in asked
    assert tenant_from_api_key(raw_key=old.raw) == tenant
    page = _html(
        _act(
            manager,
            "/admin/tenants/tenant/",
            "issue_key_revoking_others",
            [tenant.id],
            confirmed="yes",
        )
    )
    new = ISSUED_KEY.search(page)[1]
    assert tenant_from_api_key(raw_key=new) == tenant
    assert tenant_from_api_key(raw_key=old.raw) is None
    page = _html(_act(manager, "/admin/tenants/tenant/", "issue_additional_key", [tenant.id]))
    extra = ISSUED_KEY.search(page)[1]
    assert tenant_from_api_key(raw_key=extra) == tenant
    assert tenant_from_api_key(raw_key=new) == tenant
    history = _html(manager.get(f"/admin/tenants/tenant/{tenant.id}/history/"))
    assert "and revoked the other keys" in history
    assert new.split("_", 2)[2] not in history


def test_the_tenant_list_counts_active_keys(staff):
    """Each tenant shows how many of its keys work."""
    tenant, _, _, _ = _keys_of_a_tenant()
    api_key_revoke(tenant=tenant_create(name="Globex")[0])
    page = _html(staff.get("/admin/tenants/tenant/"))
    rows = re.findall(r"<tr>.*?</tr>", page, re.S)
    acme = next(row for row in rows if ">Acme<" in row)
    globex = next(row for row in rows if ">Globex<" in row)
    assert '<td class="field-active_keys">2</td>' in acme
    assert '<td class="field-active_keys">0</td>' in globex


def test_admin_pages_refuse_framing_and_actions_need_the_csrf_token(db):
    """Every page says X-Frame-Options: DENY (no clickjacking of an action), and a
    revoke posted without the form's CSRF token is refused."""
    _, _, used, _ = _keys_of_a_tenant()
    user = staff_user("keeper", staff=True, perms=("change_apikey",))
    client = Client(enforce_csrf_checks=True)
    assert client.get("/admin/login/")["X-Frame-Options"] == "DENY"
    client.force_login(user)
    for path in ("/admin/", "/admin/tenants/apikey/", f"/admin/tenants/apikey/{used.api_key.id}/"):
        assert client.get(path, follow=True)["X-Frame-Options"] == "DENY", path
    forged = _act(client, "/admin/tenants/apikey/", "revoke_selected", [used.api_key.id])
    assert forged.status_code == 403
    assert tenant_from_api_key(raw_key=used.raw) is not None


def test_a_browser_gets_the_admins_refusals_as_html_and_a_script_as_problem_json(db):
    """A 403 of the admin is Django's page for a browser (it asks for HTML), and
    problem+json otherwise, as everywhere outside the dashboard and the admin."""
    root = signed_in(get_user_model().objects.create_superuser("root", password=PASSWORD))
    page = root.get("/admin/ingestions/upload/add/", headers={"Accept": "text/html"})
    assert (page.status_code, page["Content-Type"]) == (403, "text/html; charset=utf-8")
    script = root.get("/admin/ingestions/upload/add/")
    assert (script.status_code, script["Content-Type"]) == (403, "application/problem+json")
