"""How deep a line may nest (`parse.MAX_JSON_DEPTH`), whoever reads it: the same answer for
a line checked at once (live records) and for the same line of a file, however deep the
stack it is read from (the decoder recurses, and Python's limit counts the caller's frames:
a line nested 940 deep was refused by the web server and loaded by a worker)."""

from __future__ import annotations

import json

import pytest

from apps.ingestions.engine import DEFAULT_MAX_LINE_BYTES, check_line, line_of
from apps.ingestions.engine.parse import MAX_JSON_DEPTH, parse_chunks
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.engine.testing import customer_row

TOO_DEEP = f"JSON nested too deeply (more than {MAX_JSON_DEPTH} objects and arrays)"


def _nested(depth: int, *, field: str = "metadata", opening: str = '{"a":') -> bytes:
    """A customer line nesting `depth` objects and arrays in all, its own object counting:
    `field` holds the rest, as objects (or as arrays, with `opening` "[")."""
    row = json.dumps(customer_row())[:-1]
    closing = "}" if opening.startswith("{") else "]"
    inner = depth - 1
    return (row + f', "{field}": ' + opening * inner + "1" + closing * inner + "}").encode()


def _at_depth(frames: int, call):
    """`call()` from `frames` frames deeper than here (a caller deep in middleware)."""
    if frames:
        return _at_depth(frames - 1, call)
    return call()


def _checked(data: bytes):
    return check_line("customers", line_of(1, data, max_line_bytes=DEFAULT_MAX_LINE_BYTES))


def _parsed(data: bytes) -> str:
    chunk = next(parse_chunks(RECORDS["customers"], [line_of(1, data, max_line_bytes=1 << 30)]))
    return chunk.text


@pytest.mark.parametrize(
    ("depth", "field", "opening"),
    [
        (MAX_JSON_DEPTH, "metadata", '{"a":'),
        (MAX_JSON_DEPTH + 1, "metadata", '{"a":'),
        (940, "metadata", '{"a":'),
        (MAX_JSON_DEPTH, "ignored", "["),  # a field the contract does not read nests too
        (MAX_JSON_DEPTH + 1, "ignored", "["),
        (940, "ignored", "["),
    ],
)
def test_a_line_nested_past_the_limit_is_refused_whatever_the_stack_it_is_read_from(
    depth, field, opening
):
    """At the limit a line is read (its `metadata` stored; a field not in the contract
    ignored); past it, it is an `invalid_json` reject, checked at once or in a file's
    chunk, called from a shallow stack or from 300 frames deeper."""
    data = _nested(depth, field=field, opening=opening)
    for frames in (0, 300):
        reject = _at_depth(frames, lambda: _checked(data))
        staged = _at_depth(frames, lambda: _parsed(data))
        if depth <= MAX_JSON_DEPTH:
            assert reject is None
            assert "invalid_json" not in staged
        else:
            assert (reject.field, reject.code, reject.message) == ("", "invalid_json", TOO_DEEP)
            assert f"\tinvalid_json\t{TOO_DEEP}\t" in staged


def test_a_line_nested_past_what_the_decoder_can_read_gets_the_same_reject():
    """Deeper than Python's recursion limit allows the decoder: the same reject, with the
    same message."""
    data = _nested(5000, field="ignored", opening="[")
    reject = _checked(data)
    assert (reject.field, reject.code, reject.message) == ("", "invalid_json", TOO_DEEP)
    assert f"\tinvalid_json\t{TOO_DEEP}\t" in _parsed(data)
