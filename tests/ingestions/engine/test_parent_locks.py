"""Foreign keys checked per chunk by the engine (engine/keys.py): used only where the result
is exactly PostgreSQL's own per-row check, and then just as safe: every parent is locked
until the upload commits, a missing one holds its rows as pending, and nothing the
database would have run on INSERT (a trigger, a rule) is skipped."""

from __future__ import annotations

import io
import threading
import uuid
from typing import Any

import psycopg
import pytest
from django.db import connection, connections, transaction
from psycopg import sql

from apps.ingestions.engine import RECORDS, ParentsComing
from apps.ingestions.engine.keys import HELD, ParentLocks, _Key
from apps.ingestions.engine.stage import connection_params
from apps.ingestions.engine.testing import ndjson_bytes, uid
from apps.ingestions.models import Order, OrderItem, PendingOrderItem, UploadState
from tests.factories import counts_of, rejects_of
from tests.ingestions.engine.test_pipeline import (
    _register,
    counts,
    customer,
    item,
    load_registered,
    order,
    product,
)

ITEMS = RECORDS["order_items"]


def _prepare(record_type: str) -> ParentLocks | None:
    with connection.cursor() as cursor:
        return ParentLocks.prepare(cursor.cursor, RECORDS[record_type])


def _role() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        return cursor.fetchone()[0]


def _parents(tenant, load, ndjson) -> None:
    load(tenant, ndjson("customers_0.ndjson", [customer("c0")]))
    load(tenant, ndjson("products_0.ndjson", [product("p0"), product("p1")]))
    load(tenant, ndjson("orders_0.ndjson", [order("o0", "c0"), order("o1", "c0")]))


ITEMS_FILE = [item(f"i{i}", f"o{i % 2}", f"p{i % 2}") for i in range(6)]


# --- where the engine checks keys itself -------------------------------------------------------


def test_each_final_tables_keys_are_read_from_the_catalog(db):
    """The keys come from PostgreSQL's catalog, not from the engine's own idea of them."""
    assert _prepare("order_items") == ParentLocks(
        "order_items",
        (
            _Key("orders", "order_id", (("tenant_id", "tenant_id"), ("order_id", "order_id"))),
            _Key(
                "products", "product_id", (("tenant_id", "tenant_id"), ("product_id", "product_id"))
            ),
        ),
    )
    assert _prepare("orders") == ParentLocks(
        "orders",
        (
            _Key(
                "customers",
                "customer_id",
                (("tenant_id", "tenant_id"), ("customer_id", "customer_id")),
            ),
        ),
    )
    for record_type in ("customers", "products"):
        (key,) = _prepare(record_type).keys
        assert (key.parent, key.column, key.match) == ("tenants", None, (("id", "tenant_id"),))


def test_a_pending_tables_keys_are_its_tenant_and_its_upload(db):
    with connection.cursor() as cursor:
        held = ParentLocks.prepare(
            cursor.cursor, ITEMS, table="pending_order_items", constants=HELD
        )
    assert held is not None
    assert sorted((k.parent, k.column, k.match) for k in held.keys) == [
        ("tenants", None, (("id", "tenant_id"),)),
        ("uploads", None, (("id", "upload_id"),)),
    ]


@pytest.mark.parametrize(
    ("enable", "prepared", "fired"),
    [
        ("ENABLE TRIGGER", False, 6),  # fires in origin mode only: replica would skip it
        ("ENABLE REPLICA TRIGGER", False, 0),  # fires in replica mode only: never here
        # fires either way, but would run in replica mode, where the keys of whatever it
        # writes go unchecked: PostgreSQL checks
        ("ENABLE ALWAYS TRIGGER", False, 6),
        ("DISABLE TRIGGER", True, 0),
    ],
)
def test_a_trigger_on_the_table_runs_exactly_as_it_would_without_the_engines_checks(
    tenant, ndjson, load, enable, prepared, fired
):
    """A trigger someone added to a final table is never skipped, nor started, by the
    engine's own checks: where replica mode would change what fires, PostgreSQL checks."""
    _parents(tenant, load, ndjson)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_fired (order_item_id uuid)")
        cursor.execute(
            "CREATE FUNCTION test_log_item() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO test_fired VALUES (NEW.order_item_id); RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_log AFTER INSERT ON order_items "
            "FOR EACH ROW EXECUTE FUNCTION test_log_item()"
        )
        cursor.execute(f"ALTER TABLE order_items {enable} test_log")
    assert (_prepare("order_items") is not None) is prepared
    upload = load(tenant, ndjson("order_items_1.ndjson", ITEMS_FILE))
    assert counts_of(upload) == counts(total=6, inserted=6)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM test_fired")
        assert cursor.fetchone()[0] == fired
    assert _role() == "origin"


def test_an_insert_rule_on_the_table_makes_postgres_check_every_row(tenant, ndjson, load):
    _parents(tenant, load, ndjson)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_seen (order_item_id uuid)")
        cursor.execute(
            "CREATE RULE test_seen AS ON INSERT TO order_items "
            "DO ALSO INSERT INTO test_seen VALUES (NEW.order_item_id)"
        )
    assert _prepare("order_items") is None
    upload = load(tenant, ndjson("order_items_1.ndjson", ITEMS_FILE))
    assert counts_of(upload) == counts(total=6, inserted=6)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM test_seen")
        assert cursor.fetchone()[0] == 6


_SET_GRANT = "GRANT SET ON PARAMETER session_replication_role TO {role}"
_UPDATE_GRANT = "GRANT UPDATE ON orders, products TO {role}"


@pytest.mark.parametrize(
    ("granted", "missing"),
    [
        # setting session_replication_role needs a superuser or, since PostgreSQL 15, this
        (_UPDATE_GRANT, _SET_GRANT),
        # FOR KEY SHARE needs UPDATE on the parent; PostgreSQL's own check (run as the
        # table's owner) does not
        (_SET_GRANT, _UPDATE_GRANT),
    ],
    ids=["no-set-grant", "no-update-on-parents"],
)
def test_a_role_missing_a_right_the_engines_checks_need_gets_postgres_checks(db, granted, missing):
    # Roles are the server's, not the test database's: a name of its own, so that a test
    # process running the other case at the same time does not wait on this one's.
    role = f"test_loader_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOSUPERUSER")
        cursor.execute(f"GRANT INSERT ON order_items TO {role}")
        cursor.execute(f"GRANT SELECT ON orders, products TO {role}")
        for grant, prepared in ((granted, False), (missing, True)):
            cursor.execute(grant.format(role=role))
            cursor.execute(f"SET LOCAL ROLE {role}")
            assert (_prepare("order_items") is not None) is prepared
            cursor.execute("RESET ROLE")


@pytest.mark.parametrize(
    "change",
    [
        "CREATE TABLE test_old_orders () INHERITS (orders)",  # PostgreSQL checks ONLY orders
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",  # the lock would see a filtered table
    ],
    ids=["inheritance-child", "row-security"],
)
def test_a_parent_the_lock_would_see_otherwise_gets_postgres_checks(db, change):
    with connection.cursor() as cursor:
        cursor.execute(change)
    assert _prepare("order_items") is None
    assert _prepare("customers") is not None


def test_a_session_not_in_origin_mode_gets_postgres_checks(db):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = local")
        assert _prepare("order_items") is None


# --- the outcome is PostgreSQL's ---------------------------------------------------------------


def _scenario(tenant, load, ndjson) -> dict[str, Any]:
    """Items over several chunks: new rows, a missing order and a missing product (held),
    an id repeated across chunks, a re-upload with one change; all counts and rows."""
    _parents(tenant, load, ndjson)
    first = [
        *ITEMS_FILE,
        item("i10", "o9", "p0"),  # no such order: held
        item("i11", "o0", "p9"),  # no such product: held
        item("i12", "o1", "p1"),
    ]
    again = [item("i0", "o1", "p1"), item("i1", "o1", "p1"), item("i13", "o0", "p0")]
    repeated = [item("i20", "o0", "p0"), item("i21", "o1", "p1"), item("i20", "o1", "p0")]
    uploads = [
        load(tenant, ndjson("order_items_1.ndjson", first)),
        load(tenant, ndjson("order_items_2.ndjson", again)),
        load(tenant, ndjson("order_items_3.ndjson", repeated)),
    ]
    fields = ("order_item_id", "order_id", "product_id", "quantity", "unit_price")
    return {
        "counts": [counts_of(u) for u in uploads],
        "states": [u.state for u in uploads],
        "rejects": [rejects_of(u) for u in uploads],
        "items": sorted(OrderItem.objects.filter(tenant=tenant).values_list(*fields)),
        "held": sorted(
            PendingOrderItem.objects.filter(tenant=tenant).values_list("order_item_id", "line")
        ),
    }


@pytest.mark.parametrize("array_rows", [100_000, 0], ids=["array", "join"])
def test_the_outcome_is_the_same_with_and_without_the_engines_checks(
    tenant, other_tenant, ndjson, load, small_chunks, settings, monkeypatch, array_rows
):
    """Both ways of locking parents (an array of ids per chunk; a join for a whole file,
    forced here for every source) give exactly PostgreSQL's outcome."""
    monkeypatch.setattr("apps.ingestions.engine.keys.ARRAY_ROWS", array_rows)
    with_engine = _scenario(tenant, load, ndjson)
    settings.INGEST_SETWISE_KEY_CHECKS = False
    by_postgres = _scenario(other_tenant, load, ndjson)
    assert with_engine == by_postgres
    assert with_engine["counts"] == [
        counts(total=9, inserted=7, pending=2),
        counts(total=3, inserted=1, updated=1, unchanged=1),
        counts(total=3, inserted=2, duplicates=1),
    ]
    assert sorted(line for _, line in with_engine["held"]) == [7, 8]
    assert _role() == "origin"


def _resolution(tenant, load, ndjson, *, all_new: bool) -> dict[str, Any]:
    """Items held for orders that arrive later; with `all_new`, none of their ids is in the
    final table yet (a plain INSERT resolves them), else one is (an upsert does)."""
    _parents(tenant, load, ndjson)
    first = [item("i0", "o0", "p0"), item("i1", "o9", "p0"), item("i2", "o8", "p1")]
    uploads = [load(tenant, ndjson("order_items_1.ndjson", first))]
    if not all_new:  # i0 moves to an order that has not arrived: held, and also stored
        uploads.append(load(tenant, ndjson("order_items_2.ndjson", [item("i0", "o8", "p1")])))
    orders = [order("o8", "c0"), order("o9", "c0")]
    uploads.append(load(tenant, ndjson("orders_1.ndjson", orders)))
    fields = ("order_item_id", "order_id", "product_id")
    return {
        "counts": [counts_of(u) for u in uploads],
        "items": sorted(OrderItem.objects.filter(tenant=tenant).values_list(*fields)),
        "held": PendingOrderItem.objects.filter(tenant=tenant).count(),
    }


@pytest.mark.parametrize("all_new", [True, False], ids=["insert", "upsert"])
def test_held_rows_resolve_the_same_with_and_without_the_engines_checks(
    tenant, other_tenant, ndjson, load, settings, all_new
):
    with_engine = _resolution(tenant, load, ndjson, all_new=all_new)
    settings.INGEST_SETWISE_KEY_CHECKS = False
    by_postgres = _resolution(other_tenant, load, ndjson, all_new=all_new)
    assert with_engine == by_postgres
    assert with_engine["held"] == 0
    expected = [
        (uuid_of("i0"), uuid_of("o0" if all_new else "o8"), uuid_of("p0" if all_new else "p1"))
    ]
    expected += [(uuid_of("i1"), uuid_of("o9"), uuid_of("p0"))]
    expected += [(uuid_of("i2"), uuid_of("o8"), uuid_of("p1"))]
    assert with_engine["items"] == sorted(expected)
    # resolved rows count for the uploads that brought them
    assert with_engine["counts"][0] == counts(total=3, inserted=3)
    if not all_new:
        assert with_engine["counts"][1] == counts(total=1, updated=1)


def test_no_row_of_another_tenant_counts_as_a_parent(tenant, other_tenant, ndjson, load):
    """The lock looks for parents under the loading tenant only."""
    _parents(other_tenant, load, ndjson)
    load(tenant, ndjson("products_0.ndjson", [product("p0"), product("p1")]))
    upload = load(tenant, ndjson("order_items_1.ndjson", ITEMS_FILE))
    assert counts_of(upload) == counts(total=6, pending=6)
    assert not OrderItem.objects.filter(tenant=tenant).exists()


def test_orders_of_a_missing_customer_are_held(tenant, ndjson, load):
    load(tenant, ndjson("customers_0.ndjson", [customer("c0")]))
    rows = [order("o0", "c0"), order("o1", "c9"), order("o2", "c0")]
    upload = load(tenant, ndjson("orders_1.ndjson", rows))
    assert counts_of(upload) == counts(total=3, inserted=2, pending=1)
    assert set(Order.objects.filter(tenant=tenant).values_list("customer_id", flat=True)) == {
        uuid_of("c0")
    }


def uuid_of(label: str) -> uuid.UUID:
    return uuid.UUID(uid(label))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr("apps.ingestions.engine.parse.CHUNK_ROWS", 3)


# --- the parents stay locked until the upload commits -------------------------------------------


def _connect() -> psycopg.Connection:
    return psycopg.connect(**connection_params(connection.connection), autocommit=True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("setwise", [True, False], ids=["engine-checks", "postgres-checks"])
def test_a_parent_cannot_be_deleted_under_an_upload_nor_after_it(tenant, ndjson, load, setwise):
    """While an upload of items is open, deleting their order waits (and times out here);
    once the upload commits, the delete is refused by the key: no item is left orphaned."""
    _parents(tenant, load, ndjson)
    _load_then_delete(tenant, ITEMS_FILE, ("orders", "order_id", "o0"), setwise_key_checks=setwise)
    assert OrderItem.objects.filter(tenant=tenant).count() == 6


def _load_then_delete(tenant, rows, parent: tuple[str, str, str], **options) -> None:
    """Load `rows` of order items in a transaction of its own; while it is open, deleting
    `parent` (table, key column, label) waits for its lock; once committed, the key
    refuses it."""
    data = ndjson_bytes(rows)
    upload = _register(tenant, data, "order_items")
    table, column, label = parent
    delete = sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND {} = %s").format(
        sql.Identifier(table), sql.Identifier(column)
    )
    with _connect() as loader, _connect() as other:
        other.execute("SET lock_timeout = '300ms'")
        with loader.transaction(), loader.cursor() as cursor:
            result = load_registered(cursor, upload, io.BytesIO(data), **options)
            assert result.rows.inserted == len(rows)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(delete, (tenant.id, uid(label)))
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            other.execute(delete, (tenant.id, uid(label)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("setwise", [True, False], ids=["engine-checks", "postgres-checks"])
def test_a_parent_deleted_before_the_lock_sends_its_rows_to_pending(
    tenant, ndjson, load, settings, setwise
):
    """A parent another transaction deletes (and commits) while the upload waits for its
    lock is not counted: its rows are held, not inserted without a parent."""
    settings.INGEST_SETWISE_KEY_CHECKS = setwise
    _parents(tenant, load, ndjson)
    upload = None
    with _connect() as deleter:
        deleter.execute("BEGIN")
        deleter.execute(
            "DELETE FROM orders WHERE tenant_id = %s AND order_id = %s", (tenant.id, uid("o1"))
        )
        finished = threading.Event()

        def upload_items():
            nonlocal upload
            try:
                upload = load(tenant, ndjson("order_items_1.ndjson", ITEMS_FILE))
            finally:
                connections.close_all()  # this thread's own
                finished.set()

        worker = threading.Thread(target=upload_items)
        worker.start()
        assert not finished.wait(1.0), "the upload should wait for the deleted order's lock"
        deleter.execute("COMMIT")
        worker.join(30)
    assert counts_of(upload) == counts(total=6, inserted=3, pending=3)
    assert upload.state == UploadState.COMPLETED
    orders = set(OrderItem.objects.filter(tenant=tenant).values_list("order_id", flat=True))
    assert orders == {uuid_of("o0")}


class _ParentArrivesBeforeInsert:
    """A cursor that commits a missing order (on another connection) just before the load's
    INSERT into order_items: after the hold of the row that needed it, before the write."""

    def __init__(self, cursor, arrive):
        self._cursor = cursor
        self._arrive = arrive

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def execute(self, query, params=None, **kwargs):
        text = query.as_string(self._cursor) if hasattr(query, "as_string") else str(query)
        if 'INSERT INTO "order_items"' in text and self._arrive is not None:
            self._arrive()
            self._arrive = None
        return self._cursor.execute(query, params, **kwargs)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("setwise", [True, False], ids=["engine-checks", "postgres-checks"])
def test_a_held_row_whose_parent_arrives_before_the_write_stays_held_only(
    tenant, ndjson, load, setwise
):
    """Rows held for a missing parent are kept out of the write by what was held, not by
    looking for parents again: a parent arriving in between neither lets the row in
    unlocked nor counts it twice (inserted and held). The held row is then resolved at the
    end of the upload like any other, with its parent checked."""
    _parents(tenant, load, ndjson)
    rows = [item("i0", "o0", "p0"), item("i1", "o9", "p0")]
    data = ndjson_bytes(rows)
    upload = _register(tenant, data, "order_items", strict=True)
    with _connect() as other, _connect() as loader:

        def arrive():
            other.execute(
                "INSERT INTO orders (tenant_id, order_id, external_order_id, customer_id, "
                "customer_name_snapshot, customer_email_snapshot, total_amount, currency, "
                "order_status, order_date, created_at) SELECT tenant_id, %s, 'late', "
                "customer_id, 'n', 'a@b.co', 1, 'EUR', 'paid', now(), now() FROM orders "
                "WHERE tenant_id = %s AND order_id = %s",
                (uid("o9"), tenant.id, uid("o0")),
            )

        with loader.transaction(), loader.cursor() as cursor:
            result = load_registered(
                _ParentArrivesBeforeInsert(cursor, arrive),
                upload,
                io.BytesIO(data),
                setwise_key_checks=setwise,
            )
        assert (result.rows.inserted, result.rows.pending, result.rows.unchanged) == (1, 1, 0)
        # the held row is loaded at the end of the same upload, its parent being there now
        assert [(r.record_type, r.inserted) for r in result.resolved] == [("order_items", 1)]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            other.execute(
                "DELETE FROM orders WHERE tenant_id = %s AND order_id = %s",
                (tenant.id, uid("o9")),
            )
    items = OrderItem.objects.filter(tenant=tenant).values_list("order_item_id", "order_id")
    assert sorted(items) == sorted([(uuid_of("i0"), uuid_of("o0")), (uuid_of("i1"), uuid_of("o9"))])
    assert not PendingOrderItem.objects.filter(tenant=tenant).exists()


def test_a_failed_chunk_leaves_the_session_in_origin_mode(tenant, ndjson, load):
    """An INSERT that hits an existing id rolls back to its savepoint, which also undoes
    the replica setting; the careful way then updates the row as usual."""
    _parents(tenant, load, ndjson)
    load(tenant, ndjson("order_items_1.ndjson", ITEMS_FILE[:1]))
    with transaction.atomic():
        upload = load(tenant, ndjson("order_items_2.ndjson", ITEMS_FILE))
        assert _role() == "origin"
    assert counts_of(upload) == counts(total=6, inserted=5, unchanged=1)


# --- giving way to parents on their way ---------------------------------------------------------


def _load_items(tenant, rows, *, strict=False, parents_coming=None):
    data = ndjson_bytes(rows)
    upload = _register(tenant, data, "order_items", strict=strict)
    with connection.cursor() as cursor:
        return load_registered(
            cursor.cursor, upload, io.BytesIO(data), parents_coming=parents_coming
        )


@pytest.mark.parametrize("strict", [False, True], ids=["pipelined", "strict"])
def test_a_load_about_to_hold_rows_gives_way_when_their_parents_are_coming(
    tenant, ndjson, load, small_chunks, strict
):
    """Asked before rows are held, and told the parents are on their way, the load raises
    ParentsComing; the caller rolls back, so nothing of the file remains."""
    _parents(tenant, load, ndjson)
    asked = []

    def coming() -> bool:
        asked.append(True)
        return True

    rows = [*ITEMS_FILE, item("i10", "o9", "p0")]  # the last one's order is missing
    with pytest.raises(ParentsComing), transaction.atomic():
        _load_items(tenant, rows, strict=strict, parents_coming=coming)
    assert asked == [True]
    assert not OrderItem.objects.filter(tenant=tenant).exists()
    assert not PendingOrderItem.objects.filter(tenant=tenant).exists()


def test_a_load_holds_rows_when_no_parents_are_coming(tenant, ndjson, load, small_chunks):
    _parents(tenant, load, ndjson)
    asked = []
    rows = [*ITEMS_FILE, item("i10", "o9", "p0")]
    result = _load_items(tenant, rows, parents_coming=lambda: asked.append(1) or False)
    assert (result.rows.inserted, result.rows.pending) == (6, 1)
    assert asked == [1]


def test_a_load_that_holds_nothing_never_asks(tenant, ndjson, load, small_chunks):
    _parents(tenant, load, ndjson)
    asked = []
    result = _load_items(tenant, ITEMS_FILE, parents_coming=lambda: asked.append(1) or True)
    assert result.rows.inserted == 6
    assert asked == []


# --- the parents' ids from the parse, each probed once per upload --------------------------------


class _Probes:
    """A cursor that records the ids of each parent probe the engine sends as arrays."""

    def __init__(self, cursor):
        self._cursor = cursor
        self.probed: list[set[str]] = []

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def execute(self, query, params=None, **kwargs):
        for name, value in (params or {}).items() if isinstance(params, dict) else ():
            if name.startswith("ids_"):
                self.probed.append(set(value.strip("{}").split(",")))
        return self._cursor.execute(query, params, **kwargs)


def test_a_parent_named_again_by_later_chunks_is_probed_once(tenant, ndjson, load, small_chunks):
    """Chunks of three items naming the same two products: each product is locked by the
    first chunk that names it, and no later chunk probes it again. Orders, whose items come
    together, are read back from the staged chunk each time."""
    _parents(tenant, load, ndjson)
    rows = [item(f"i{i}", f"o{i // 6}", f"p{i % 2}") for i in range(12)]
    data = ndjson_bytes(rows)
    upload = _register(tenant, data, "order_items")
    with connection.cursor() as cursor:
        probes = _Probes(cursor.cursor)
        result = load_registered(probes, upload, io.BytesIO(data))
    assert result.rows.inserted == 12
    assert probes.probed == [{uid("p0"), uid("p1")}]  # four chunks, one probe of products
    assert Order.objects.filter(tenant=tenant).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_parent_only_an_earlier_chunk_probed_stays_locked_until_the_commit(
    tenant, ndjson, load, small_chunks
):
    """The product of every chunk is locked by the first: deleting it waits while the upload
    is open, and is refused once it committed."""
    _parents(tenant, load, ndjson)
    rows = [item(f"i{i}", "o0", "p0") for i in range(9)]
    _load_then_delete(tenant, rows, ("products", "product_id", "p0"))


def _chunk_table(cursor, rows) -> sql.Composable:
    """A temp table of staged-like rows (`line`, order_id, product_id) as a chunk source."""
    cursor.execute(
        "CREATE TEMP TABLE chunk (line bigint, order_item_id uuid, order_id uuid, "
        "product_id uuid) ON COMMIT DROP"
    )
    for line, (order_label, product_label) in enumerate(rows, 1):
        cursor.execute(
            "INSERT INTO pg_temp.chunk VALUES (%s, gen_random_uuid(), %s, %s)",
            (line, uid(order_label), uid(product_label)),
        )
    return sql.SQL("pg_temp.chunk")


def test_the_ids_probed_leave_out_nulls_and_those_locked_already(tenant, ndjson, load):
    """Products named by the parse are probed but for those locked already; orders are read
    back from the chunk, and a missing one fails the check as before."""
    _parents(tenant, load, ndjson)
    locks = _prepare("order_items")
    params = {"tenant": tenant.id}
    with connection.cursor() as cursor:
        source = _chunk_table(cursor.cursor, [("o0", "p0"), ("o1", "p1")])
        named = {"product_id": {uid("p0"), uid("p1"), "\\N"}}
        check = {"rows": 2, "named": named}
        fresh = locks.lock_ids(cursor.cursor, source, params, **check, locked={})
        assert fresh == {"product_id": {uid("p0"), uid("p1")}}
        fresh = locks.lock_ids(cursor.cursor, source, params, **check, locked=fresh)
        assert fresh == {}  # nothing to probe: both are locked already
        named["product_id"].add(uid("p9"))  # no such product
        assert locks.lock_ids(cursor.cursor, source, params, **check, locked={}) is None
        cursor.execute(
            "INSERT INTO pg_temp.chunk VALUES (3, gen_random_uuid(), %s, %s)",
            (uid("o9"), uid("p0")),
        )  # no such order
        named["product_id"].discard(uid("p9"))
        assert locks.lock_ids(cursor.cursor, source, params, **check, locked={}) is None
