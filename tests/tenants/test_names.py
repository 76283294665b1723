"""Tenant names: unique ignoring case (a database constraint, also under concurrent
creates), listed by `list_tenants`, and accepted, as well as ids, by the key commands."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.ingestions.engine.testing import customer_row
from apps.ingestions.models import Upload
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import (
    LAST_USED_RESOLUTION,
    TenantNameTakenError,
    api_key_revoke,
    api_key_rotate,
    tenant_create,
    tenant_from_api_key,
)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _fields(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines())


@pytest.mark.parametrize("taken", ["Acme", "ACME", "acme", "  aCmE  "])
def test_a_name_taken_in_any_case_is_refused_with_the_tenant_that_has_it(tenant, taken):
    """The service names the tenant that holds the name, and how to list them."""
    with pytest.raises(TenantNameTakenError) as refused:
        tenant_create(name=taken)
    assert refused.value.detail == (
        f"A tenant named 'Acme' (id {tenant.id}) already exists; tenant names are unique, "
        "ignoring case. `manage.py list_tenants` lists them."
    )
    assert refused.value.status == 409
    assert Tenant.objects.count() == 1


def test_create_tenant_with_a_taken_name_is_a_precise_command_error(tenant):
    """The command fails with the service's message; no tenant or key is added."""
    with pytest.raises(CommandError, match=r"A tenant named 'Acme' \(id .*\) already exists"):
        run("create_tenant", "ACME")
    assert (Tenant.objects.count(), ApiKey.objects.count()) == (1, 1)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 201, "A tenant name has at most 200 characters, not 201."),
        ("tab\there", "A tenant name may not hold control characters: 'tab\\there'."),
        ("nul\x00", "A tenant name may not hold control characters: 'nul\\x00'."),
    ],
    ids=["too-long", "tab", "nul"],
)
def test_create_tenant_with_a_name_it_cannot_keep_is_a_precise_command_error(db, name, message):
    """Too long for the column, or a control character (which breaks list_tenants'
    columns, or PostgreSQL's text): one line, no traceback, no tenant."""
    with pytest.raises(CommandError) as raised:
        call_command("create_tenant", name)
    assert str(raised.value) == message
    assert not Tenant.objects.exists()


def test_the_database_refuses_a_name_in_another_case(tenant):
    """The constraint holds whatever the code does: an INSERT around the service fails."""
    with pytest.raises(IntegrityError, match="tenants_name_unique_ci"), transaction.atomic():
        Tenant.objects.create(name="aCME")


def test_two_creates_of_one_name_at_once_make_one_tenant_and_one_clean_error(
    transactional_db,
):
    """Two creates racing (the second's check runs before the first commits): one
    tenant, and the loser gets the same `TenantNameTakenError`, not an IntegrityError."""
    first_created, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def first():
        try:
            with transaction.atomic():
                outcome["first"] = tenant_create(name="Acme")[0]
                first_created.set()
                release.wait(10)  # hold the uncommitted row while the second one inserts
        finally:
            connection.close()

    def second():
        try:
            outcome["second"] = tenant_create(name="ACME")[0]
        except Exception as exc:
            outcome["second"] = exc
        finally:
            connection.close()

    one = threading.Thread(target=first)
    one.start()
    assert first_created.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(1)
    assert two.is_alive()  # waiting on the first one's row in the unique index
    release.set()
    one.join(10)
    two.join(10)
    assert isinstance(outcome["second"], TenantNameTakenError)
    assert f"(id {outcome['first'].id})" in outcome["second"].detail
    assert list(Tenant.objects.values_list("name", flat=True)) == ["Acme"]
    assert ApiKey.objects.count() == 1


def test_list_tenants_shows_id_created_active_keys_and_name(db):
    """One line per tenant, oldest first; revoked keys are not counted."""
    acme, _ = tenant_create(name="Acme")
    api_key_rotate(tenant=acme, revoke_existing=False)
    globex, _ = tenant_create(name="Globex")
    api_key_revoke(tenant=globex)
    Tenant.objects.filter(id=globex.id).update(is_active=False)

    def when(tenant: Tenant) -> str:
        return tenant.created_at.strftime("%Y-%m-%d %H:%M:%S")

    assert run("list_tenants").splitlines() == [
        f"{'ID':36}  CREATED (UTC)        KEYS  NAME",
        f"{acme.id}  {when(acme)}     2  Acme",
        f"{globex.id}  {when(globex)}     0  Globex  (inactive)",
    ]


def test_list_tenants_json_is_one_array(db):
    """`--json`: id, name, created_at, is_active and active_keys per tenant."""
    acme, _ = tenant_create(name="Acme")
    assert json.loads(run("list_tenants", "--json")) == [
        {
            "id": str(acme.id),
            "name": "Acme",
            "created_at": acme.created_at.isoformat(),
            "is_active": True,
            "active_keys": 1,
        }
    ]


def test_list_tenants_without_tenants_says_how_to_make_one(db):
    """No tenants: a line saying so; `--json`: an empty array."""
    assert "manage.py create_tenant NAME" in run("list_tenants")
    assert json.loads(run("list_tenants", "--json")) == []


@pytest.mark.parametrize("by", ["id", "name", "NAME"])
def test_rotate_api_key_finds_the_tenant_by_id_or_name(tenant, other_tenant, by):
    """`rotate_api_key Acme` (any case) does what `rotate_api_key <id>` does."""
    ref = {"id": str(tenant.id), "name": "Acme", "NAME": "ACME"}[by]
    old = ApiKey.objects.get(tenant=tenant)
    fields = _fields(run("rotate_api_key", ref))
    assert fields["tenant_id"] == str(tenant.id)
    assert tenant_from_api_key(raw_key=fields["api_key"]) == tenant
    assert ApiKey.objects.get(id=old.id).revoked_at is not None
    assert ApiKey.objects.get(tenant=other_tenant).revoked_at is None


@pytest.mark.parametrize("by", ["id", "name", "nAmE"])
def test_revoke_api_key_finds_the_tenant_by_id_or_name(tenant, other_tenant, by):
    """`revoke_api_key acme` revokes Acme's keys and no one else's."""
    ref = {"id": str(tenant.id), "name": "Acme", "nAmE": "aCmE"}[by]
    assert run("revoke_api_key", ref).strip() == "revoked=1"
    assert not ApiKey.objects.filter(tenant=tenant, revoked_at=None).exists()
    assert ApiKey.objects.get(tenant=other_tenant).revoked_at is None


@pytest.mark.parametrize("shape", [str, lambda id: str(id).upper(), lambda id: id.hex])
def test_a_name_shaped_like_a_tenant_id_is_refused(tenant, shape):
    """Commands take an id or a name, the id first: a tenant named as another's id could
    not be found by its name, and a command meant for it acted on the other."""
    name = shape(tenant.id)
    with pytest.raises(CommandError) as refused:
        call_command("create_tenant", name)
    assert str(refused.value) == f"A tenant name may not be a tenant id's shape: {name!r}."
    assert Tenant.objects.count() == 1


@pytest.mark.parametrize(
    "name",
    ["\u200b", "acme\u200b", "\u202egnp.exe", "x\u2028y", "a\u2029b", "\ue000corp", "\ufeffBOM"],
    ids=[
        "zero-width",
        "zero-width-after",
        "rtl-override",
        "line-sep",
        "para-sep",
        "private",
        "bom",
    ],
)
def test_a_name_with_invisible_characters_is_refused(tenant, name):
    """Format characters, separators and private-use code points make a name that looks
    empty, or like another (`acme` and `acme` with a zero-width space were two tenants)."""
    with pytest.raises(CommandError) as refused:
        call_command("create_tenant", name)
    assert str(refused.value).startswith("A tenant name may not hold invisible characters")
    assert Tenant.objects.count() == 1


def test_a_name_is_unique_as_read_not_as_typed(tenant):
    """Compatibility forms are the same name: a fullwidth "Ａｃｍｅ" is "Acme", taken; a
    new one is kept in that form, and found by either."""
    with pytest.raises(TenantNameTakenError):
        tenant_create(name="\uff21\uff43\uff4d\uff45")
    created, _ = tenant_create(name="\uff29nitech")
    assert created.name == "Initech"
    assert _fields(run("rotate_api_key", "\uff29NITECH"))["tenant_id"] == str(created.id)


@pytest.mark.parametrize("command", ["rotate_api_key", "revoke_api_key"])
@pytest.mark.parametrize("ref", ["Initech", str(uuid.UUID(int=1)), "not-a-uuid", " "])
def test_an_unknown_tenant_says_how_to_find_ids_and_names(tenant, command, ref):
    """Neither an id nor a name: the error names what was given and `list_tenants`."""
    with pytest.raises(CommandError) as refused:
        run(command, ref)
    assert str(refused.value) == (
        f"No tenant has the id or name {ref!r}. `manage.py list_tenants` lists every "
        "tenant's id and name (names match ignoring case)."
    )
    assert ApiKey.objects.get(tenant=tenant).revoked_at is None


def test_the_key_commands_help_says_an_id_or_a_name(capsys):
    """`--help` of both commands names both ways to give the tenant."""
    for command in ("rotate_api_key", "revoke_api_key"):
        with pytest.raises(SystemExit):
            call_command(command, "--help")
        assert "the tenant's id, or its name (ignoring case)" in capsys.readouterr().out


def test_a_keys_last_use_is_written_once_a_minute_at_most(db):
    """Authenticating stamps `last_used_at` on first use and again only once it is older
    than a minute, so a busy key is not written on every request."""
    tenant, issued = tenant_create(name="Acme")
    key = ApiKey.objects.get(tenant=tenant)
    assert key.last_used_at is None
    tenant_from_api_key(raw_key=issued.raw)
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None
    tenant_from_api_key(raw_key=issued.raw)
    key.refresh_from_db()
    assert key.last_used_at == first
    stale = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    ApiKey.objects.filter(id=key.id).update(last_used_at=stale)
    tenant_from_api_key(raw_key=issued.raw)
    key.refresh_from_db()
    assert key.last_used_at > stale
    tenant_from_api_key(raw_key=issued.raw[:-1] + "x")  # a wrong key stamps nothing
    assert ApiKey.objects.get(id=key.id).last_used_at == key.last_used_at


def test_ingest_file_takes_the_tenants_name_too(tenant, other_tenant, ndjson):
    """`ingest_file --tenant acme` loads the file for Acme."""
    path = ndjson("customers_1.ndjson", [customer_row()])
    upload = json.loads(run("ingest_file", str(path), "--tenant", "acme", "--json"))
    assert Upload.objects.get(id=upload["id"]).tenant_id == tenant.id
