"""Template filters of the dashboard's pages."""

from __future__ import annotations

import unicodedata

from django import template

register = template.Library()

# Shown as escapes, not as themselves: control characters (not valid in HTML), format
# characters such as the bidirectional overrides (U+202E turns the text after it around,
# so "exe.png" can show as "gnp.exe"), separators that break a line, surrogates.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


@register.filter
def visible(text: str) -> str:
    """Text a client sent (a rejected line, a file name, a webhook's URL or description),
    with every character that would not show as itself written as its escape (`\\u202e`,
    `\\x01`); escaped for HTML afterwards as usual."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
