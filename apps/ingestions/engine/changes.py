"""The final tables' change feed: the ids of the orders and order items a merge writes,
noted in `final_changes` in the merge's own transaction, for a reader that keeps figures
derived from those rows (analytics) to catch up from.

One row per write statement, its ids in one array: about 0.2 us a row, against a few us
for a row of the merge itself (a trigger with a transition table would cost more than the
merge: it also turns off the engine's set-wise key checks, see `keys`). The ids of a
statement's whole source are noted, also those it then holds as pending or leaves
unchanged: a reader looks each id up in the final table, so an id too many costs a lookup
and an id missing would be a figure wrong. A rolled-back merge (a failed or dry run, a
savepoint given up) takes its notes with it. Only these two types are noted: the other
types change no figure the reader keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import Cursor, sql

from apps.ingestions.engine.records import RecordSpec

NOTED_TYPES = ("orders", "order_items")
_noted = set(NOTED_TYPES)

_NOTE = (
    "INSERT INTO final_changes (tenant_id, record_type, keys, created_at) "
    "SELECT %(tenant)s::uuid, {name}, array_agg(d.{key}), now() FROM {source} d HAVING count(*) > 0"
)


def note_changes(cursor: Cursor, spec: RecordSpec, source: sql.Composable, tenant_id) -> None:
    """Note the ids of `source` (aliased `d`) as written to `spec`'s final table."""
    if spec.name not in _noted:
        return
    cursor.execute(
        sql.SQL(_NOTE).format(
            name=sql.Literal(spec.name), key=sql.Identifier(spec.key), source=source
        ),
        {"tenant": tenant_id},
    )


@contextmanager
def changes_unnoted() -> Iterator[None]:
    """Note nothing in this process while in it: `make bench` times the engine without
    the change feed this way. Nothing else should: a reader would miss the changes."""
    _noted.clear()
    try:
        yield
    finally:
        _noted.update(NOTED_TYPES)
