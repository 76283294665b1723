"""JSON whose numbers stay exact, end to end: parsed as `Decimal`, stored as written,
answered as numbers. For documents whose numbers mean something exact (a rule's
`"maximum": 19.99`, or a bound with more digits than a float has), where the stdlib's
float would round them.

`ExactJSONParser` (a DRF parser), `ExactJSONRenderer` (a DRF renderer) and, for a model's
`JSONField(encoder=..., decoder=...)`, `ExactEncoder` and `ExactDecoder`.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

import msgspec
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from apps.core.jsontext import decode_error_message

_encode = msgspec.json.Encoder(decimal_format="number").encode


def _exact(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"the number {text[:40]} is out of range") from None


_decode = msgspec.json.Decoder(float_hook=_exact).decode


def exact_loads(data: bytes | str):
    """Decode JSON with every number that has a fraction or exponent a `Decimal`."""
    return _decode(data)


def exact_dumps(value) -> bytes:
    """Encode JSON with `Decimal`s as numbers, exactly as they are."""
    return _encode(value)


class ExactJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        data = stream.read()
        try:
            return _decode(data)
        except (msgspec.DecodeError, ValueError) as exc:
            raise ParseError(f"JSON parse error - {decode_error_message(str(exc), data)}") from None
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None


class ExactJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return _encode(data)


class ExactEncoder(json.JSONEncoder):
    """For `JSONField(encoder=...)`: the whole value through `exact_dumps`."""

    def encode(self, o) -> str:
        return _encode(o).decode()


class ExactDecoder(json.JSONDecoder):
    """For `JSONField(decoder=...)`: fractions and exponents as `Decimal`; so are integers
    longer than Python converts to `int` (4,300 digits): jsonb prints a number in full, so
    `1e4300` stored comes back as 4,301 digits, which `int()` refuses."""

    def __init__(self, *args, **kwargs):
        kwargs["parse_float"] = Decimal
        kwargs["parse_int"] = _integer
        super().__init__(*args, **kwargs)


def exact_loads_stored(text: str):
    """Decode JSON as PostgreSQL prints jsonb: numbers exact, however many digits."""
    return json.loads(text, cls=ExactDecoder)


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _INT_DIGITS else Decimal(text)


_INT_DIGITS = 4300  # sys.get_int_max_str_digits()'s default
