"""Every number the dashboard shows, formatted here once, for both the server-rendered page
and the JSON document it polls (the page's script only places the texts)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import msgspec
from django.urls import reverse
from django.utils import timezone

from apps.core.exactjson import exact_dumps
from apps.dashboard.selectors import LiveFigures, TenantSummary, Throughput, TypeRules
from apps.dashboard.templatetags.shown import visible
from apps.ingestions.models import RecordBatch, Upload, UploadSession, UploadState
from apps.ingestions.selectors import record_batch_rows

_COUNTS = ("total", "inserted", "updated", "unchanged", "rejected", "pending")
_LOADED = (UploadState.COMPLETED, UploadState.COMPLETED_WITH_ERRORS)


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"


def seconds(value: float) -> str:
    """A duration: to the millisecond under 10 s, to the second above."""
    return f"{value:.3f} s" if value < 10 else f"{value:,.0f} s"


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def upload_json(upload: Upload) -> dict:
    total = upload.size_bytes
    if total:
        percent = min(100, upload.bytes_done * 100 // total)
    else:
        percent = 100 if upload.is_terminal else 0
    rows = upload.row_counts
    error = f"{upload.error_code}: {upload.error_detail}" if upload.error_code else ""
    stalled = _stalled(upload)
    progress = f"{percent}%" + (f", no progress since {when(upload.updated_at)}" if stalled else "")
    return {
        "id": str(upload.id),
        "state": upload.state,
        "percent": percent,
        "url": reverse("dashboard:upload", kwargs={"upload_id": upload.id}),
        "errors_url": reverse("dashboard:errors", kwargs={"upload_id": upload.id}),
        "warnings_url": reverse("dashboard:warnings", kwargs={"upload_id": upload.id}),
        "rows": rows,
        "rules_version": upload.rules_version,
        "progress": {
            "bytes_done": upload.bytes_done,
            "rows_done": upload.rows_done,
            "rows_per_second": upload.rows_per_second,
        },
        "cells": {
            "created": when(upload.created_at),
            "tenant": upload.tenant.name,
            "filename": visible(upload.filename),
            "type": upload.record_type,
            "state": upload.state,
            "dry_run": "dry run: nothing loaded" if upload.dry_run else "",
            "error": error,
            "progress": progress,
            "bytes": f"{size(upload.bytes_done)} of {size(total)}",
            "rows_done": plural(upload.rows_done, "row"),
            # a rate only while rows move: a stalled one's last rate is no speed at all
            "rows_per_second": (
                rate(upload.rows_per_second) if upload.started_at and not stalled else ""
            ),
            **{name: f"{rows[name]:,}" for name in _COUNTS},
            "warned": f"{rows['warned']:,}",
            "rules": _checked_with(upload),
        },
    }


# A load writes its progress after every chunk (a second or so): one silent this long is
# stalled (its worker gone, or a client's bytes not coming), until the housekeeping or the
# bytes move it on.
STALLED_SECONDS = 60


def _stalled(upload: Upload) -> bool:
    if upload.state != UploadState.PROCESSING or upload.updated_at is None:
        return False
    return (timezone.now() - upload.updated_at).total_seconds() > STALLED_SECONDS


def _checked_with(upload: Upload) -> str:
    """The rules an upload was validated with, known once it is loaded (nothing before)."""
    if upload.rules_version is not None:
        return f"rules v{upload.rules_version}"
    return "contract only" if upload.state in _LOADED else ""


def batch_rules(versions: dict[str, int]) -> str:
    """The rules a live batch was checked with, by type (`RecordBatch.rules`)."""
    checked = [f"{name} rules v{version}" for name, version in sorted(versions.items())]
    return ", ".join(checked) or "contract only"


def batch_json(batch: RecordBatch) -> dict:
    """A live batch with its counts as an upload's (its parts' once merged, and its rejects)
    and the time from accepting it to its merge; its parts must be prefetched."""
    rows = record_batch_rows(batch=batch)
    latency = (batch.merged_at - batch.created_at).total_seconds() if batch.merged_at else None
    return {
        "id": batch.id,
        "state": batch.state,
        "errors_url": reverse("dashboard:batch-errors", kwargs={"batch_id": batch.id}),
        "rows": rows,
        "merge_seconds": latency,
        "cells": {
            "created": when(batch.created_at),
            "tenant": batch.tenant.name,
            "id": str(batch.id),
            "type": batch.record_type,
            "state": batch.state,
            "records": f"{batch.records:,}",
            **{name: f"{rows[name]:,}" for name in _COUNTS if name != "total"},
            "merge_seconds": "" if latency is None else seconds(latency),
        },
    }


def live_json(live: LiveFigures) -> dict:
    """Live records now: accepted, rejected and merged over the last window (and per
    second), the backlog not merged yet and the age of its oldest batch."""
    window = live.window_seconds
    records = plural(live.backlog, "record")
    batches = f"{live.backlog_batches:,} batch{'es' if live.backlog_batches != 1 else ''}"
    return {
        "window_seconds": window,
        "accepted": live.accepted,
        "rejected": live.rejected,
        "merged": live.merged,
        "backlog": live.backlog,
        "backlog_batches": live.backlog_batches,
        "lag_seconds": round(live.lag_seconds, 3),
        "cells": {
            "accepted": f"{live.accepted:,} ({rate(live.accepted / window)}/s)",
            "rejected": f"{live.rejected:,}",
            "merged": f"{live.merged:,} ({rate(live.merged / window)}/s)",
            "backlog": f"{records} in {batches}",
            "lag": seconds(live.lag_seconds) if live.backlog_batches else "nothing waiting",
        },
    }


# the chart's time axis: a tick every so many seconds, by the window's length
_TICK_SECONDS = ((20 * 60, 5 * 60), (2 * 3600, 10 * 60), (8 * 3600, 3600), (None, 3 * 3600))


def throughput_json(series: Throughput) -> dict:
    """The chart's bars and its axes' texts: ticks at round times (fractions of the width),
    the two ends with their dates, and a caption with the peak and the fastest upload."""
    total = sum(r * series.bucket_seconds for r in series.rows_per_second)
    peak = max(series.rows_per_second, default=0.0)
    length = (series.end - series.start).total_seconds()
    step = next(tick for limit, tick in _TICK_SECONDS if limit is None or length <= limit)
    start = series.start.timestamp()
    first = start - start % step + step
    ticks = [
        {
            "at": round((moment - start) / length, 4),
            "label": datetime.fromtimestamp(moment, UTC).strftime("%H:%M"),
        }
        for moment in range(int(first), int(start + length), step)
    ]
    fastest = f"; fastest upload {rate(series.fastest)} rows/s" if series.fastest else ""
    return {
        "start": series.start.isoformat(),
        "end": series.end.isoformat(),
        "bucket_seconds": series.bucket_seconds,
        "rows_per_second": [round(r, 3) for r in series.rows_per_second],
        "peak": round(peak, 3),
        "fastest": round(series.fastest, 1),
        "ticks": ticks,
        "caption": f"{round(total):,} rows; peak {rate(peak)} rows/s "
        f"(each bar: {_span(series.bucket_seconds)}){fastest}",
        "start_label": series.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
        "end_label": series.end.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _span(bucket_seconds: int) -> str:
    if bucket_seconds < 60:
        return f"{bucket_seconds} s"
    return f"{bucket_seconds // 60} min"


def reject_codes_json(counts: list[tuple[str, int]]) -> list[dict]:
    return [{"code": code, "count": n, "label": f"{n:,}"} for code, n in counts]


def reject_codes_of(rejects: list[dict]) -> list[dict]:
    """Rejects read whole (a batch's) by code, most frequent first, as `reject_codes_json`."""
    counts = Counter(r["code"] for r in rejects)
    return reject_codes_json(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def rules_json(rules: list[TypeRules] | None) -> list[dict] | None:
    """A tenant's rules per record type as the rules card shows them; None for every
    tenant (no card). A schema is in `cells` only, as the page's text: its numbers exact,
    as written (a JSON document's encoder would turn them into floats or strings)."""
    return None if rules is None else [_type_rules_json(r) for r in rules]


def _type_rules_json(rules: TypeRules) -> dict:
    rule = rules.current
    shown = {"type": rules.record_type, "versions": rules.versions, "current": None}
    cells = dict.fromkeys(("action", "unknown_fields", "created", "schema"), "")
    cells.update(
        type=rules.record_type,
        versions=plural(rules.versions, "version"),
        rules="contract only",
    )
    if rule is not None:
        shown["current"] = {
            "version": rule.version,
            "action": rule.action,
            "unknown_fields": rule.unknown_fields,
            "created_at": rule.created_at.isoformat(),
        }
        cells.update(
            rules=f"version {rule.version}",
            action=rule.action,
            unknown_fields=rule.unknown_fields,
            created=when(rule.created_at),
            schema=msgspec.json.format(exact_dumps(rule.schema), indent=2).decode(),
        )
    return {**shown, "cells": cells}


def session_json(session: UploadSession) -> dict:
    """A file still being received (a resumable or tus session)."""
    percent = session.offset * 100 // session.size if session.size else 0
    return {
        "id": session.token,
        "state": session.state,
        "percent": percent,
        "cells": {
            "created": when(session.created_at),
            "tenant": session.tenant.name,
            "filename": visible(session.filename),
            "type": session.record_type or "decided at the end",
            "received": f"{percent}%",
            "bytes": f"{size(session.offset)} of {size(session.size)}",
            "expires": when(session.expires_at),
        },
    }


def tenant_summary_json(summary: TenantSummary) -> dict:
    """A tenant's row in the staff summary; its name links to its own view."""
    return {
        "id": str(summary.tenant.id),
        "url": f"{reverse('dashboard:index')}?tenant={summary.tenant.id}",
        "cells": {
            "tenant": summary.tenant.name,
            "uploads": f"{summary.uploads:,}",
            "active": f"{summary.active:,}",
            "failed": f"{summary.failed:,}",
            "last_upload": when(summary.last_upload_at) or "never",
            "loaded": f"{summary.rows_loaded:,}",
            "rejected": f"{summary.rows_rejected:,}",
            "pending": f"{summary.rows_pending:,}",
            "backlog": f"{summary.backlog:,}",
        },
    }


def upload_timings(upload: Upload) -> dict[str, str]:
    """When an upload was received, started and finished, and how long it waited and ran."""
    started, finished = upload.started_at, upload.finished_at
    waited = (started - upload.created_at).total_seconds() if started else None
    ran = (finished - started).total_seconds() if started and finished else None
    return {
        "created": when(upload.created_at),
        "started": when(started) or "not yet",
        "finished": when(finished) or "not yet",
        "waited": "" if waited is None else seconds(max(0.0, waited)),
        "ran": "" if ran is None else seconds(max(0.0, ran)),
        "size": size(upload.size_bytes),
        "sha256": upload.sha256,
        "strict": "yes: all or nothing" if upload.strict else "no",
    }


def sales_json(*, last_day: date | None, days: list, products: list, length: int) -> dict:
    """The sales card: each currency's revenue for each of the `length` days to
    `last_day` (a day without orders is 0.00), and its top products. Currencies are never
    added together: the page shows one at a time, the one with the most orders first."""
    if last_day is None:
        return {"currencies": [], "days": [], "products": {}, "caption": "No orders yet."}
    orders: Counter[str] = Counter()
    for _, totals in days:
        orders.update(totals.orders_by_currency)
    currencies = sorted(orders, key=lambda code: (-orders[code], code))
    by_day = dict(days)
    shown = []
    for offset in range(length - 1, -1, -1):
        day = last_day - timedelta(days=offset)
        revenue = by_day[day].revenue if day in by_day else {}
        shown.append(
            {
                "date": day.isoformat(),
                "revenue": {code: f"{revenue.get(code, 0):.2f}" for code in currencies},
            }
        )
    top: dict[str, list] = {code: [] for code in currencies}
    for rank in products:
        top.setdefault(rank.currency, []).append(
            {
                "label": f"{rank.name} ({rank.sku})",
                "units": rank.units,
                "revenue": f"{rank.revenue:.2f}",
            }
        )
    caption = f"{length} days to {last_day.isoformat()} (UTC, by order date)"
    return {"currencies": currencies, "days": shown, "products": top, "caption": caption}
