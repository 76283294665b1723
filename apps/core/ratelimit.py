"""Request rate limits: a fixed-window counter that every web process shares exactly.

A key's window opens with its first request and lasts the period of the rate
(`API_RATE_LIMIT`, e.g. "600/min"); every request adds one hit in a single atomic step of
the store, and is let through while its window holds no more hits than the limit. The
first request after the window ends opens the next one. A fixed window never lets more
than the limit through within one window, whatever the number of clients and processes;
across the end of a window a client can get up to twice the limit in a short time.

The store is PostgreSQL unless `RATE_LIMIT_STORE` is `redis`: one row per key in an
UNLOGGED table, counted by one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` statement,
which an API key's request runs inside its key's lookup (`apps.tenants.services`): no round
trip of its own. A key's row is reused window after window, so nothing piles up to purge:
the table holds one row per key ever limited. Redis (`REDIS_URL`) counts with a Lua script
(INCR, and PEXPIRE on a fresh key), a round trip after the lookup.
Time is the store's own (the key's TTL, `statement_timestamp()`), so web hosts whose clocks
differ still agree on every window. Redis unreachable: requests are let through (and
logged), as uploads are accepted while the broker is down; PostgreSQL down fails the
request anyway.

Headers follow the IETF draft "RateLimit Fields for HTTP"
(draft-ietf-httpapi-ratelimit-headers-06): `RateLimit-Limit`, `RateLimit-Remaining`,
`RateLimit-Reset` (seconds until the window ends) and `RateLimit-Policy` (`600;w=60`).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.core.db import prepared_cursor

logger = logging.getLogger(__name__)

_RATE_RE = re.compile(
    r"\s*(?P<limit>\d+)\s*/\s*(?P<count>\d*)\s*"
    r"(?P<unit>s|sec|second|m|min|minute|h|hour|d|day)s?\s*",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds


@dataclass(frozen=True)
class RateLimitState:
    """One request's outcome: let through or not, and what its key has left."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # whole seconds until the window ends, at least 1
    period: int

    @property
    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": f"{self.limit};w={self.period}",
        }


@functools.lru_cache(maxsize=16)
def parse_rate(rate: str) -> Rate:
    """`"600/min"` -> Rate(600, 60). Units s, m, h, d (or sec, min, hour, day, plural too),
    optionally counted: `"50/10s"` is 50 per 10 seconds."""
    match = _RATE_RE.fullmatch(rate)
    if match is None or int(match["limit"]) < 1 or match["count"] == "0":
        raise ImproperlyConfigured(
            f"Rate {rate!r}: expected <requests>/<period>, e.g. '600/min' or '50/10s'."
        )
    period = int(match["count"] or 1) * _UNIT_SECONDS[match["unit"][0].lower()]
    return Rate(limit=int(match["limit"]), period=period)


def window_name(key: str, rate: Rate) -> str:
    """The store's name for `key`'s window. The period is in it: a rate changed to another
    period starts afresh rather than finish a window of the other length."""
    return f"{key}:{rate.period}"


def api_key_window(prefix: str) -> str:
    """What an API key's requests are counted under: its public prefix, never the secret."""
    return f"api_key:{prefix}"


def limit_redis_url() -> str:
    """The Redis the limits are counted in (`RATE_LIMIT_STORE=redis`), or "" for
    PostgreSQL."""
    return settings.REDIS_URL if settings.RATE_LIMIT_STORE == "redis" else ""


def rate_limit_hit(*, key: str, rate: Rate, redis_url: str = "") -> RateLimitState | None:
    """Count one request of `key` against `rate`, atomically; None when the Redis store
    cannot be reached (the request is then let through)."""
    name = window_name(key, rate)
    if redis_url:
        try:
            hits, milliseconds = _redis_hit(redis_url, name=name, rate=rate)
        except redis.RedisError as exc:
            _warn_unreachable(exc)
            return None
    else:
        hits, milliseconds = _postgres_hit(name=name, rate=rate)
    return rate_limit_state(hits, milliseconds, rate)


def rate_limit_state(hits: int, milliseconds: int, rate: Rate) -> RateLimitState:
    """The outcome of a request that made its window's count `hits`, `milliseconds` before
    the window ends (as of its statement's start)."""
    # A statement that began just before another opened the window reaches the row after
    # it, and measures from its own, earlier start: a little more than the period. The
    # window opened before this request counted in it, so the period is the most left.
    seconds = min(rate.period, math.ceil(milliseconds / 1000))
    return RateLimitState(
        allowed=hits <= rate.limit,
        limit=rate.limit,
        remaining=max(0, rate.limit - hits),
        reset=max(1, seconds),
        period=rate.period,
    )


# --- Redis -------------------------------------------------------------------------------

# Atomic in the server: one hit, and the window's end set by the key's first hit (a key
# that somehow has no TTL gets one rather than limiting forever).
_REDIS_HIT = """
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {hits, ttl}
"""
_scripts: dict[str, redis.commands.core.Script] = {}
_scripts_lock = threading.Lock()
_warned_at = [0.0]  # monotonic time of the last "unreachable" warning


def _redis_script(url: str) -> redis.commands.core.Script:
    with _scripts_lock:
        script = _scripts.get(url)
        if script is None:
            # Short timeouts: a hung Redis must not hold every request.
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            script = _scripts[url] = client.register_script(_REDIS_HIT)
        return script


def _warn_unreachable(exc: Exception) -> None:
    now = time.monotonic()
    if now - _warned_at[0] >= 60:  # once a minute, not once a request
        _warned_at[0] = now
        logger.warning("rate limit store unreachable, requests let through: %s", exc)


def _redis_hit(url: str, *, name: str, rate: Rate) -> tuple[int, int]:
    script = _redis_script(url)
    hits, milliseconds = script(keys=[f"ratelimit:{name}"], args=[rate.period * 1000])
    return int(hits), int(milliseconds)


# --- PostgreSQL --------------------------------------------------------------------------

# A window is live until it ends. Over the limit nothing is written (the row is only
# locked), so a client that keeps knocking while limited costs no dead rows.
_LIVE = "w.resets_at > statement_timestamp()"


def postgres_hit_sql(only_with: str = "") -> str:
    """The hit, one statement: an upsert that returns the window's `hits` and the
    milliseconds left (`reset_ms`), or no row when over the limit. `only_with` (`FROM x`)
    counts only when `x` has a row: a caller's statement that counts in the same round
    trip, in a CTE (`apps.tenants.services`, a key found)."""
    return f"""
INSERT INTO core_rate_limit_window AS w (key, hits, resets_at)
SELECT %(key)s::text, 1, statement_timestamp() + make_interval(secs => %(period)s)
    {only_with}
ON CONFLICT (key) DO UPDATE SET
    hits = CASE WHEN {_LIVE} THEN w.hits + 1 ELSE 1 END,
    resets_at = CASE WHEN {_LIVE} THEN w.resets_at ELSE excluded.resets_at END
WHERE NOT ({_LIVE}) OR w.hits < %(limit)s
RETURNING w.hits AS hits,
    ceil(extract(epoch FROM w.resets_at - statement_timestamp()) * 1000) AS reset_ms
"""


def postgres_hit_params(name: str, rate: Rate) -> dict:
    return {"key": name, "period": rate.period, "limit": rate.limit}


_POSTGRES_HIT = postgres_hit_sql()
_POSTGRES_RESET = """
SELECT ceil(extract(epoch FROM w.resets_at - statement_timestamp()) * 1000)
FROM core_rate_limit_window AS w WHERE w.key = %(key)s
"""


def postgres_over_limit(cursor, name: str, rate: Rate) -> tuple[int, int]:
    """(hits, milliseconds) of a hit refused (nothing written): its window's end."""
    cursor.execute(_POSTGRES_RESET, {"key": name}, prepare=True)
    reset = cursor.fetchone()
    return rate.limit + 1, reset[0] if reset else rate.period * 1000


def _postgres_hit(*, name: str, rate: Rate) -> tuple[int, int]:
    # One statement on the request's connection: in autocommit (no ATOMIC_REQUESTS) it
    # commits at once, so the row lock is held for that statement only.
    with prepared_cursor() as cursor:
        cursor.execute(_POSTGRES_HIT, postgres_hit_params(name, rate), prepare=True)
        row = cursor.fetchone()
        if row is None:  # over the limit, nothing written: when its window ends
            row = postgres_over_limit(cursor, name, rate)
    hits, milliseconds = row
    return int(hits), max(0, int(milliseconds))
