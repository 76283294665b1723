"""The analytics endpoints' query parameters, read strictly: a range (`from`, `to`, `tz`),
`currency`, `limit` and `by`. Each bad value is a 400 that names its parameter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from rest_framework import exceptions

from apps.core.api import ascii_int, single_value

# ASCII digits only (a `\d` would take '٣'); the offset's `+` may arrive as a space, as an
# unencoded `+` in a query string is read.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ]"
    r"(?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)"
    r"(?P<offset>Z|[+\- ][0-9]{2}:?[0-9]{2})?"
)
_CURRENCY = re.compile(r"[A-Z]{3}")
LIMIT_DEFAULT = 10
LIMIT_MAX = 100
BY_CHOICES = ("revenue", "units")


@dataclass(frozen=True, slots=True)
class Range:
    """Orders whose `order_date` is in [start, end); None is unbounded on that side."""

    start: datetime | None
    end: datetime | None
    tz: str


def _bad(name: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message]})


# in the time zone database, but no place's zone: the machine's own, and tzdata's
# placeholder for an unset zone
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_PLACES


def read_tz(params) -> str:
    """`tz`: an IANA time zone name (default UTC)."""
    raw = single_value(params, "tz")
    if raw is None:
        return "UTC"
    if raw not in _zone_names():
        raise _bad("tz", f"Must be an IANA time zone name such as Europe/Paris, not {raw!r}.")
    return raw


_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC: PostgreSQL takes offsets up to 15:59 only, ISO 8601 up to 23:59.
    An instant before 0001-01-01 UTC is that one (nothing is earlier); one after the
    calendar's end raises OverflowError."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        if moment.year == 1:
            return _FIRST_INSTANT
        raise


def _bound(name: str, raw: str, zone: tzinfo, *, end: bool) -> tuple[datetime | None, datetime]:
    """A `from` (inclusive start) or a `to` (exclusive end just past it), in UTC (None:
    past the calendar), and as written (the same instant, unless `_utc` moved it to the
    first there is): a date is its whole day in `zone`, a timestamp without an offset is
    in `zone`."""
    try:
        if _DATE.fullmatch(raw):
            moment = datetime.combine(date.fromisoformat(raw), time(), tzinfo=zone)
        else:
            match = _TIMESTAMP.fullmatch(raw)
            if match is None:
                raise ValueError(raw)
            offset = (match["offset"] or "").replace(" ", "+")
            moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{offset}")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
    except ValueError:
        raise _bad(
            name, f"Must be a date (2024-01-31) or an ISO 8601 timestamp, not {raw!r}."
        ) from None
    try:
        if end:
            step = timedelta(days=1) if _DATE.fullmatch(raw) else timedelta(microseconds=1)
            moment += step
        return _utc(moment), moment
    except OverflowError:
        return None, moment  # the day after 9999-12-31: no end


def read_range(params) -> Range:
    """`from`, `to` (each optional, inclusive) and `tz`; `from` after `to` is a 400."""
    tz = read_tz(params)
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    raw_from, raw_to = single_value(params, "from"), single_value(params, "to")
    start = end = None
    if raw_from is not None:
        start, written_start = _bound("from", raw_from, zone, end=False)
        if start is None:
            raise _bad("from", f"{raw_from!r} is past the last day there is.")
    if raw_to is not None:
        end, written_end = _bound("to", raw_to, zone, end=True)
        # compared as written: two instants before the first there is are one in UTC
        if start is not None and end is not None and written_end <= written_start:
            raise _bad("to", f"Must not be before from ({raw_from!r}), not {raw_to!r}.")
    return Range(start=start, end=end, tz=tz)


def read_currency(params) -> str | None:
    """`currency`: an ISO 4217 code, three capital letters (optional)."""
    raw = single_value(params, "currency")
    if raw is not None and not _CURRENCY.fullmatch(raw):
        raise _bad("currency", f"Must be an ISO 4217 code such as EUR, not {raw!r}.")
    return raw


def read_limit(params) -> int:
    """`limit`: 1 to LIMIT_MAX, default LIMIT_DEFAULT."""
    raw = single_value(params, "limit")
    if raw is None:
        return LIMIT_DEFAULT
    value = ascii_int(raw)
    if value is None or not 1 <= value <= LIMIT_MAX:
        raise _bad("limit", f"Must be an integer from 1 to {LIMIT_MAX}, not {raw!r}.")
    return value


def read_by(params) -> str:
    """`by`: what top products are ranked by (default revenue)."""
    raw = single_value(params, "by")
    if raw is None:
        return "revenue"
    if raw not in BY_CHOICES:
        raise _bad("by", f'"{raw}" is not one of: {", ".join(BY_CHOICES)}.')
    return raw
