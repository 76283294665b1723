"""Signing per the Standard Webhooks specification: secrets are `whsec_` + base64 of random
bytes; a signature is `v1,` + base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

SECRET_PREFIX = "whsec_"
_KEY_BYTES = 32


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()


def secret_expires(previous: dict) -> datetime:
    """When a rotated-out secret (an entry of an endpoint's `previous_secrets`) stops
    signing."""
    return datetime.fromisoformat(previous["expires_at"])


def signature(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(*, secrets: list[str], message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated (while a
    rotated-out secret still signs, there are two or more)."""
    return " ".join(
        signature(secret=s, message_id=message_id, timestamp=timestamp, body=body) for s in secrets
    )
