"""Deterministic sample data: one folder of NDJSON files per tenant, with optional faults.

The same seed gives the same bytes. Faults are extra lines (never changes to good rows),
cycling through every reject kind, so good data stays referentially complete and each
bad line maps to exactly one expected reject.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec

_encode = msgspec.json.Encoder(decimal_format="string").encode
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF")
_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Zoë", "José")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")

# Every reject kind a bad line can carry (orphans come from missing parents, not lines).
FAULT_KINDS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "invalid_type",
    "invalid_uuid",
    "too_long",
    "out_of_range",
    "invalid_email",
    "invalid_currency",
    "invalid_timestamp",
    "line_total_mismatch",
    "line_too_long",
)


@dataclass(frozen=True)
class Sizes:
    customers: int = 1000
    products: int = 100
    orders: int = 5000
    items_per_order: float = 2.8
    fault_rate: float = 0.0


@dataclass(frozen=True)
class WrittenFile:
    record_type: str
    path: Path
    rows: int
    faults: int


class _Gen:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def when(self) -> str:
        moment = _EPOCH + timedelta(seconds=self.rng.randrange(365 * 86400))
        return moment.isoformat().replace("+00:00", "Z")

    def money(self, low: int, high: int) -> Decimal:
        return Decimal(self.rng.randrange(low * 100, high * 100)) / 100


def _customers(gen: _Gen, count: int) -> Iterator[dict]:
    for n in range(count):
        first, last = gen.rng.choice(_FIRST), gen.rng.choice(_LAST)
        yield {
            "customer_id": gen.uuid(),
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}.{n}@example.com".replace("ë", "e").replace(
                "é", "e"
            ),
            "metadata": {"segment": gen.rng.choice(("retail", "wholesale")), "n": n},
            "created_at": gen.when(),
        }


def _products(gen: _Gen, count: int) -> Iterator[dict]:
    categories = [gen.uuid() for _ in range(max(1, count // 50))]
    for n in range(count):
        yield {
            "product_id": gen.uuid(),
            "sku": f"SKU-{n:06d}",
            "name": f"Product {n}",
            "price": str(gen.money(1, 500)),
            "category_id": gen.rng.choice(categories),
            "active": gen.rng.random() > 0.1,
            "created_at": gen.when(),
        }


def _fault(gen: _Gen, kind: str, good: dict, key: str) -> bytes:
    """A bad line of the given kind, derived from a good row with a fresh id."""
    row = {**good, key: gen.uuid()}
    first_str = next((k for k, v in row.items() if isinstance(v, str) and k != key), key)
    if kind == "invalid_json":
        return _encode(row)[:-5]
    if kind == "not_an_object":
        return b"[1, 2, 3]"
    if kind == "missing_field":
        row.pop(first_str)
    elif kind == "invalid_type":
        row[first_str] = 123
    elif kind == "invalid_uuid":
        row[key] = "not-a-uuid"
    elif kind == "too_long":
        row[first_str] = "x" * 300
    elif kind == "out_of_range":
        for money in ("price", "total_amount", "unit_price"):
            if money in row:
                row[money] = "-1.00"
                break
        else:
            row["created_at"] = 5
    elif kind == "invalid_email":
        for field in ("email", "customer_email_snapshot"):
            if field in row:
                row[field] = "no-at-sign"
                break
        else:
            row[key] = "not-a-uuid"
    elif kind == "invalid_currency":
        if "currency" in row:
            row["currency"] = "ZZZ"
        else:
            row[key] = "not-a-uuid"
    elif kind == "invalid_timestamp":
        if "created_at" in row:
            row["created_at"] = "yesterday"
        else:
            row["quantity"] = 0
    elif kind == "line_total_mismatch":
        if "line_total" in row:
            row["line_total"] = str(Decimal(row["line_total"]) + 1)
        else:
            row[key] = "not-a-uuid"
    elif kind == "line_too_long":
        row["padding"] = "y" * (1024 * 1024 + 10)
    return _encode(row)


class _Writer:
    def __init__(self, gen: _Gen, path: Path, record_type: str, key: str, fault_rate: float):
        self.gen, self.path, self.record_type, self.key = gen, path, record_type, key
        self.fault_rate = fault_rate
        self.rows = self.faults = 0
        self.long_written = False
        self._fh = path.open("wb", buffering=1 << 20)

    def write(self, row: dict) -> None:
        self._fh.write(_encode(row) + b"\n")
        self.rows += 1
        if self.fault_rate and self.gen.rng.random() < self.fault_rate:
            kind = FAULT_KINDS[self.faults % len(FAULT_KINDS)]
            if kind == "line_too_long":
                if self.long_written:  # one 1 MiB line per file is enough
                    kind = "invalid_json"
                self.long_written = True
            self._fh.write(_fault(self.gen, kind, row, self.key) + b"\n")
            self.faults += 1
            self.rows += 1

    def close(self) -> WrittenFile:
        self._fh.close()
        return WrittenFile(self.record_type, self.path, self.rows, self.faults)


def write_tenant_files(folder: Path, *, sizes: Sizes, seed: int) -> list[WrittenFile]:
    """Write customers, products, orders and order_items files for one tenant."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = _Gen(seed)

    def writer(record_type: str, key: str) -> _Writer:
        return _Writer(gen, folder / f"{record_type}_1.ndjson", record_type, key, sizes.fault_rate)

    files = []
    customers = writer("customers", "customer_id")
    people = []
    for row in _customers(gen, sizes.customers):
        customers.write(row)
        people.append((row["customer_id"], row["name"], row["email"]))
    files.append(customers.close())

    products = writer("products", "product_id")
    catalogue = []
    for row in _products(gen, sizes.products):
        products.write(row)
        catalogue.append((row["product_id"], Decimal(row["price"])))
    files.append(products.close())

    orders = writer("orders", "order_id")
    items = writer("order_items", "order_item_id")
    for n in range(sizes.orders):
        order, lines = _order(gen, n, seed, people, catalogue, sizes.items_per_order)
        orders.write(order)
        for line in lines:
            items.write(line)
    files.append(orders.close())
    files.append(items.close())
    return files


def _order(
    gen: _Gen,
    n: int,
    seed: int,
    people: list[tuple[str, str, str]],
    catalogue: list[tuple[str, Decimal]],
    items_per_order: float,
) -> tuple[dict, list[dict]]:
    """Order number `n` of a customer among `people`, and its items from `catalogue`
    (`items_per_order` on average, at least one); its total is theirs."""
    whole, fraction = int(items_per_order), items_per_order % 1
    customer_id, name, email = gen.rng.choice(people)
    order_id = gen.uuid()
    count = max(1, whole + (1 if gen.rng.random() < fraction else 0))
    total = Decimal(0)
    lines = []
    for _ in range(count):
        product_id, price = gen.rng.choice(catalogue)
        quantity = gen.rng.randint(1, 5)
        total += price * quantity
        lines.append(
            {
                "order_item_id": gen.uuid(),
                "order_id": order_id,
                "product_id": product_id,
                "quantity": quantity,
                "unit_price": str(price),
                "line_total": str(price * quantity),
            }
        )
    when = gen.when()
    order = {
        "order_id": order_id,
        "external_order_id": f"EXT-{seed}-{n:08d}",
        "customer_id": customer_id,
        "customer_name_snapshot": name,
        "customer_email_snapshot": email,
        "total_amount": str(total),
        "currency": gen.rng.choice(_CURRENCIES),
        "order_status": gen.rng.choice(_STATUSES),
        "order_date": when,
        "raw_payload": {"channel": gen.rng.choice(("web", "app", "pos"))},
        "created_at": when,
    }
    return order, lines
