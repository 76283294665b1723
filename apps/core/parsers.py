"""Request parsers of the API (DRF's DEFAULT_PARSER_CLASSES)."""

import sys

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with JSON nested past Python's recursion limit a 400 parse error
    like any other malformed JSON, not a 500; and a number past Python's digit limit for
    integers said in the client's terms, not as advice to call a Python function."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ParseError as exc:
            cause = exc.__context__
            if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
                limit = sys.get_int_max_str_digits()
                raise ParseError(
                    f"JSON parse error - a number has more than {limit} digits."
                ) from None
            raise
