"""The ingestion models in the Django admin: uploads, rejects, upload sessions, live record
batches and validation rules, which staff read and no one (a superuser neither) adds,
changes or deletes there; their searches and filters stay cheap on big tables."""

from __future__ import annotations

import re
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.core.admin import CappedCountPaginator
from apps.ingestions.admin import RejectAdmin
from apps.ingestions.engine.testing import customer_row
from apps.ingestions.models import RecordBatch, Reject, Upload, UploadSession, ValidationRule
from apps.ingestions.services import record_batch_accept, rules_put, session_create
from apps.tenants.models import Tenant
from tests.factories import STAFF_PASSWORD as PASSWORD
from tests.factories import page_text as _html
from tests.factories import signed_in, staff_user


@pytest.fixture
def staff(db) -> Client:
    """A staff member with no permissions granted."""
    return signed_in(staff_user("reader"))


def _everything(tenant: Tenant, load, ndjson) -> dict[str, object]:
    """One of each: an upload with rejects, a session, a live batch and a rule."""
    upload = load(tenant, ndjson("customers_1.ndjson", [customer_row(), b"{oops"]))
    session = session_create(tenant=tenant, filename="big.ndjson", size=100)
    rule = rules_put(
        tenant=tenant,
        record_type="customers",
        schema={"properties": {"name": {"maxLength": 40}}},
        action="warn",
        unknown_fields="ignore",
    )
    body = b'{"customer_id": "nope"}\n'
    batch = record_batch_accept(tenant=tenant, record_type="customers", body=body, json_array=False)
    return {
        "upload": upload,
        "reject": Reject.objects.get(upload=upload),
        "uploadsession": session,
        "validationrule": rule,
        "recordbatch": batch,
    }


def test_staff_read_uploads_rejects_sessions_batches_and_rules(staff, tenant, load, ndjson):
    """Each list shows the tenant's row and each row's page opens, for staff with no
    permissions granted; an upload's page links to its rejects."""
    objects = _everything(tenant, load, ndjson)
    for model, obj in objects.items():
        listed = _html(staff.get(f"/admin/ingestions/{model}/"))
        assert f"/admin/ingestions/{model}/{obj.pk}/change/" in listed, model
        _html(staff.get(f"/admin/ingestions/{model}/{obj.pk}/change/"))
    upload = objects["upload"]
    page = _html(staff.get(f"/admin/ingestions/upload/{upload.id}/change/"))
    assert f"/admin/ingestions/reject/?upload__id__exact={upload.id}" in page
    rejects = _html(staff.get(f"/admin/ingestions/reject/?upload__id__exact={upload.id}"))
    assert "invalid_json" in rejects
    assert "Record batches" in _html(staff.get("/admin/"))  # not "Record batchs"
    batch = _html(staff.get(f"/admin/ingestions/recordbatch/{objects['recordbatch'].pk}/change/"))
    assert '"code": "invalid_uuid"' in batch
    assert '"maxLength": 40' in _html(
        staff.get(f"/admin/ingestions/validationrule/{objects['validationrule'].pk}/change/")
    )


READ_ONLY = ["upload", "reject", "uploadsession", "recordbatch", "validationrule"]


@pytest.mark.parametrize("model", READ_ONLY)
def test_a_superuser_cannot_add_change_or_delete_what_the_services_own(
    db, tenant, load, ndjson, model
):
    """Even a superuser gets 403 for add, change and delete, and no button for them."""
    root = signed_in(get_user_model().objects.create_superuser("root", password=PASSWORD))
    obj = _everything(tenant, load, ndjson)[model]
    base = f"/admin/ingestions/{model}/"
    assert root.get(f"{base}add/").status_code == 403
    assert root.post(f"{base}add/", {}).status_code == 403
    assert root.post(f"{base}{obj.pk}/change/", {}).status_code == 403
    assert root.get(f"{base}{obj.pk}/delete/").status_code == 403
    assert root.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    page = _html(root.get(f"{base}{obj.pk}/change/"))
    assert 'name="_save"' not in page
    assert "deletelink" not in page
    assert f"{base}add/" not in _html(root.get(base))
    counts = {m: m.objects.count() for m in (Upload, UploadSession, RecordBatch, ValidationRule)}
    assert all(counts.values())


@pytest.mark.parametrize(
    "query", ["?q=%00", "?state=%00", "?q=a%00b", "?upload__id__exact=not-a-uuid"]
)
def test_a_filter_postgresql_cannot_take_is_refused_not_a_5xx(staff, query):
    """A NUL in a search or filter is a 400; a malformed id is Django's "invalid filter"."""
    response = staff.get(f"/admin/ingestions/upload/{query}")
    response_rejects = staff.get(f"/admin/ingestions/reject/{query}")
    for answer in (response, response_rejects):
        assert answer.status_code in (200, 302, 400)
    if "%00" in query:
        assert response.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tenants/tenant/?name__regex=(",
        "/admin/tenants/tenant/?name__iregex=%5B",
        "/admin/ingestions/upload/?filename__regex=(",
        "/admin/ingestions/upload/?created_at__year=99999999999",
        "/admin/auth/user/?username__startswith=%00",
        "/admin/auth/user/?email=%00",
        "/admin/auth/group/?name=%00",
    ],
)
def test_a_list_whose_query_the_database_refuses_is_a_400_in_every_admin(staff, path):
    """An invalid regular expression, a year past the calendar, a NUL in Django's own
    users' and groups' lists: 400 (each was a 500)."""
    assert staff.get(path).status_code == 400


def test_searching_a_rows_id_finds_that_row(staff, tenant, load, ndjson):
    """An id (a token for a session, any case for a UUID) finds its row; other text
    searches the names."""
    objects = _everything(tenant, load, ndjson)
    for model in ("upload", "uploadsession", "recordbatch"):
        pk = str(objects[model].pk)
        found = _html(staff.get(f"/admin/ingestions/{model}/", {"q": f" {pk} "}))
        assert f"/admin/ingestions/{model}/{objects[model].pk}/change/" in found, model
    tenants = _html(staff.get("/admin/tenants/tenant/", {"q": str(tenant.id).upper()}))
    assert f"/admin/tenants/tenant/{tenant.id}/change/" in tenants
    assert "0 results" in _html(staff.get("/admin/ingestions/upload/", {"q": str(uuid4())}))
    assert "1 result" in _html(staff.get("/admin/ingestions/upload/", {"q": "customers_1"}))


def test_rejects_filter_by_code_and_batches_by_type(staff, tenant, load, ndjson):
    """The filters offer every reject code and record type, and filter by them."""
    upload = load(tenant, ndjson("customers_1.ndjson", [b"{oops", b"[1]", customer_row()]))
    invalid = _html(staff.get(f"/admin/ingestions/reject/?upload={upload.id}&code=invalid_json"))
    assert re.findall(r'class="field-code">([^<]+)<', invalid) == ["invalid_json"]
    everything = _html(staff.get("/admin/ingestions/reject/"))
    for code in ("orphan", "rule_violation", "line_too_long"):
        assert f"?code={code}" in everything
    record_batch_accept(tenant=tenant, record_type="customers", body=b"[1]\n", json_array=False)
    customers = _html(staff.get("/admin/ingestions/recordbatch/?record_type=customers"))
    orders = _html(staff.get("/admin/ingestions/recordbatch/?record_type=orders"))
    assert len(re.findall(r"/admin/ingestions/recordbatch/\d+/change/", customers)) == 1
    assert re.findall(r"/admin/ingestions/recordbatch/\d+/change/", orders) == []
    assert "?record_type=mixed" in orders


def test_a_long_list_is_counted_up_to_a_cap(staff, tenant, load, ndjson, monkeypatch):
    """The rejects list never counts past its cap (a COUNT(*) of millions is slow)."""
    monkeypatch.setattr(CappedCountPaginator, "CAP", 2)
    monkeypatch.setattr(RejectAdmin, "list_per_page", 1)
    load(tenant, ndjson("customers_1.ndjson", [b"{oops", b"[1]", b"{", customer_row()]))
    page = _html(staff.get("/admin/ingestions/reject/"))
    assert "2 rejects" in page
    assert len(re.findall(r'class="field-code">([^<]+)<', page)) == 1
