"""Tenants and their API keys: created by a command, stored hashed, rotated and revoked
(SPEC 5)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.core.errors import NotFoundError
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import api_key_revoke, api_key_rotate, tenant_create, tenant_from_api_key


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _fields(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines())


def _stored_anywhere(text: str) -> int:
    """How many rows of the tenant and key tables contain `text` in any column."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM api_keys k WHERE k::text LIKE %s) "
            "+ (SELECT count(*) FROM tenants t WHERE t::text LIKE %s)",
            [f"%{text}%"] * 2,
        )
        return cursor.fetchone()[0]


def test_create_tenant_prints_the_tenant_id_and_the_key_on_their_own_lines(db):
    """`create_tenant NAME` prints exactly `tenant_id=<uuid>` and `api_key=<key>` lines."""
    output = run("create_tenant", "Acme Shop")
    lines = output.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["tenant_id", "api_key"]
    fields = _fields(output)
    tenant = Tenant.objects.get(id=uuid.UUID(fields["tenant_id"]))
    assert tenant.name == "Acme Shop"
    assert re.fullmatch(r"ck_[0-9a-f]{12}_[A-Za-z0-9_-]{40,}", fields["api_key"])
    assert tenant_from_api_key(raw_key=fields["api_key"]) == tenant


def test_create_tenant_json_prints_one_object(db):
    """`--json` prints a single JSON object with the id, the name and the key."""
    data = json.loads(run("create_tenant", "Globex", "--json"))
    assert set(data) >= {"tenant_id", "api_key"}
    assert data["name"] == "Globex"
    assert tenant_from_api_key(raw_key=data["api_key"]).id == uuid.UUID(data["tenant_id"])


def test_create_tenant_refuses_a_blank_name(db):
    """A blank name is a command error, and no tenant is created."""
    with pytest.raises(CommandError):
        run("create_tenant", "   ")
    assert Tenant.objects.count() == 0


def test_the_key_is_stored_hashed_and_never_in_the_clear(db):
    """Only a public prefix and a SHA-256 of the key are stored; the raw key and its
    secret part appear in no column of the tenant and key tables."""
    tenant, issued = tenant_create(name="Acme")
    key = ApiKey.objects.get(tenant=tenant)
    assert key.key_hash == hashlib.sha256(issued.raw.encode()).hexdigest()
    assert issued.raw.startswith(f"ck_{key.prefix}_")
    secret = issued.raw.split("_", 2)[2]
    assert _stored_anywhere(issued.raw) == 0
    assert _stored_anywhere(secret) == 0
    assert _stored_anywhere(key.prefix) == 1


def test_every_key_is_different(db):
    """Two tenants (and two keys of one tenant) never share a key or a prefix."""
    first, one = tenant_create(name="A")
    _, two = tenant_create(name="B")
    three = api_key_rotate(tenant=first, revoke_existing=False)
    raws = {one.raw, two.raw, three.raw}
    assert len(raws) == 3
    assert ApiKey.objects.values("prefix").distinct().count() == 3


def test_a_key_resolves_to_its_own_tenant(tenant, other_tenant):
    """Each tenant's key resolves to that tenant and no other."""
    mine = api_key_rotate(tenant=tenant)
    theirs = api_key_rotate(tenant=other_tenant)
    assert tenant_from_api_key(raw_key=mine.raw) == tenant
    assert tenant_from_api_key(raw_key=theirs.raw) == other_tenant


def test_rotating_revokes_the_old_key_and_the_new_one_works(db):
    """After a rotation the old key stops working at once and the new one works."""
    tenant, old = tenant_create(name="Acme")
    new = api_key_rotate(tenant=tenant)
    assert tenant_from_api_key(raw_key=old.raw) is None
    assert tenant_from_api_key(raw_key=new.raw) == tenant
    assert ApiKey.objects.get(prefix=old.api_key.prefix).revoked_at is not None


def test_rotating_with_keep_old_leaves_both_keys_working(db):
    """`revoke_existing=False` adds a key for a changeover; both work."""
    tenant, old = tenant_create(name="Acme")
    new = api_key_rotate(tenant=tenant, revoke_existing=False)
    assert tenant_from_api_key(raw_key=old.raw) == tenant
    assert tenant_from_api_key(raw_key=new.raw) == tenant


def test_rotate_command_prints_a_new_working_key(db):
    """`rotate_api_key TENANT_ID` prints the new key; the old one is revoked."""
    tenant, old = tenant_create(name="Acme")
    fields = _fields(run("rotate_api_key", str(tenant.id)))
    assert fields["tenant_id"] == str(tenant.id)
    assert tenant_from_api_key(raw_key=fields["api_key"]) == tenant
    assert tenant_from_api_key(raw_key=old.raw) is None


def test_revoking_by_prefix_revokes_only_that_key(db):
    """Revoking one key by its public prefix leaves the tenant's other keys working."""
    tenant, first = tenant_create(name="Acme")
    second = api_key_rotate(tenant=tenant, revoke_existing=False)
    assert api_key_revoke(tenant=tenant, prefix=first.api_key.prefix) == 1
    assert tenant_from_api_key(raw_key=first.raw) is None
    assert tenant_from_api_key(raw_key=second.raw) == tenant


def test_revoking_all_keys_locks_the_tenant_out(db):
    """Without a prefix every active key of the tenant is revoked; other tenants keep theirs."""
    tenant, first = tenant_create(name="Acme")
    second = api_key_rotate(tenant=tenant, revoke_existing=False)
    other, others_key = tenant_create(name="Globex")
    assert api_key_revoke(tenant=tenant) == 2
    assert tenant_from_api_key(raw_key=first.raw) is None
    assert tenant_from_api_key(raw_key=second.raw) is None
    assert tenant_from_api_key(raw_key=others_key.raw) == other


def test_revoking_an_unknown_or_foreign_prefix_is_not_found(db):
    """A prefix that is not an active key of this tenant is refused; nothing is revoked."""
    tenant, key = tenant_create(name="Acme")
    other, others_key = tenant_create(name="Globex")
    with pytest.raises(NotFoundError):
        api_key_revoke(tenant=tenant, prefix="000000000000")
    with pytest.raises(NotFoundError):
        api_key_revoke(tenant=tenant, prefix=others_key.api_key.prefix)
    assert tenant_from_api_key(raw_key=others_key.raw) == other
    assert tenant_from_api_key(raw_key=key.raw) == tenant


def test_revoke_command_by_prefix_and_for_all(db):
    """`revoke_api_key TENANT_ID [--prefix P]` prints how many keys it revoked."""
    tenant, first = tenant_create(name="Acme")
    second = api_key_rotate(tenant=tenant, revoke_existing=False)
    third = api_key_rotate(tenant=tenant, revoke_existing=False)
    assert run("revoke_api_key", str(tenant.id), "--prefix", first.api_key.prefix).strip() == (
        "revoked=1"
    )
    assert tenant_from_api_key(raw_key=first.raw) is None
    assert tenant_from_api_key(raw_key=second.raw) == tenant
    assert run("revoke_api_key", str(tenant.id)).strip() == "revoked=2"
    assert tenant_from_api_key(raw_key=third.raw) is None
    with pytest.raises(CommandError):
        run("revoke_api_key", str(uuid.uuid4()))


def test_an_inactive_tenants_key_does_not_resolve(db):
    """A deactivated tenant is locked out even with an unrevoked key."""
    tenant, issued = tenant_create(name="Acme")
    Tenant.objects.filter(id=tenant.id).update(is_active=False)
    assert tenant_from_api_key(raw_key=issued.raw) is None


def _tamper(raw: str) -> str:
    return raw[:-1] + ("A" if raw[-1] != "A" else "B")


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda raw: "", id="empty"),
        pytest.param(lambda raw: "ck_", id="prefix-only-marker"),
        pytest.param(lambda raw: "ck", id="no-separator"),
        pytest.param(lambda raw: raw.split("_", 2)[2], id="secret-only"),
        pytest.param(lambda raw: "_".join(raw.split("_", 2)[:2]), id="no-secret"),
        pytest.param(lambda raw: raw.rsplit("_", 1)[0] + "_", id="empty-secret"),
        pytest.param(_tamper, id="last-char-changed"),
        pytest.param(lambda raw: raw + "x", id="extra-char"),
        pytest.param(lambda raw: raw[:-1], id="one-char-short"),
        pytest.param(lambda raw: "xk" + raw[2:], id="wrong-scheme"),
        pytest.param(lambda raw: raw.upper(), id="upper-cased"),
        pytest.param(lambda raw: " " + raw, id="leading-space"),
        pytest.param(lambda raw: "ck_000000000000_" + raw.split("_", 2)[2], id="wrong-prefix"),
        pytest.param(lambda raw: hashlib.sha256(raw.encode()).hexdigest(), id="the-hash"),
        pytest.param(lambda raw: "ck_' OR 1=1 --_x", id="injection"),
        pytest.param(
            lambda raw: "ck_\x00_\x00",
            id="nul",
        ),
    ],
)
def test_a_wrong_or_malformed_key_resolves_to_nobody(db, make_key):
    """Anything but the exact key (variants, the stored hash itself, junk) gives None."""
    _, issued = tenant_create(name="Acme")
    assert tenant_from_api_key(raw_key=make_key(issued.raw)) is None


def test_another_tenants_secret_with_my_prefix_does_not_resolve(db):
    """A valid secret paired with another key's prefix matches neither key."""
    _, mine = tenant_create(name="Acme")
    _, theirs = tenant_create(name="Globex")
    mixed = f"ck_{mine.api_key.prefix}_{theirs.raw.split('_', 2)[2]}"
    assert tenant_from_api_key(raw_key=mixed) is None
