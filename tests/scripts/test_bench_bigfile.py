"""The big-file phase's file: every row a valid, distinct customer, as many as asked."""

from __future__ import annotations

import json

from apps.ingestions import engine
from scripts.bench_bigfile import write_big_file


def test_the_big_file_holds_exactly_the_rows_asked_each_a_valid_distinct_customer(tmp_path):
    path = tmp_path / "customers_big.ndjson"
    size = write_big_file(path, 100_123)  # past one block of 100,000 lines
    data = path.read_bytes()
    assert size == len(data)
    lines = data.splitlines()
    assert len(lines) == 100_123
    ids = {json.loads(line)["customer_id"] for line in lines}
    assert len(ids) == 100_123
    for number in (1, 2, 100_000, 100_001, 100_123):
        line = engine.line_of(number, lines[number - 1], max_line_bytes=1 << 20)
        assert engine.check_line("customers", line) is None
