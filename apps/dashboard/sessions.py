"""The dashboard's sign-in sessions (SESSION_ENGINE): Django's, in the database, reading the
cookie strictly. A session key is what Django makes (lowercase letters and digits); any
other cookie value, a NUL byte say, is no session, never a query PostgreSQL refuses."""

from __future__ import annotations

from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

_KEY_CHARS = frozenset(VALID_KEY_CHARS)


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(super()._validate_session_key(key)) and set(key) <= _KEY_CHARS
