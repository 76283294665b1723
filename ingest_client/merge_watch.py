"""Which live batches the stream sent are merged: checked a couple of requests at a time
while it runs, and waited for at its end (`--wait`)."""

from __future__ import annotations

import threading
import time

import httpx

POLL_EVERY = 1.0  # seconds between merge checks: at most 2 GETs, far below 600/min per key


class MergeWatch:
    """Which of the batches sent are merged, checked cheaply: batches are merged oldest
    first, so when one is merged so are those before it; a check asks for the newest and
    for one halfway between the last known merged and the newest (2 GETs at most)."""

    def __init__(self, http: httpx.Client, api_key: str):
        self.http, self.api_key = http, api_key
        self.urls: list[str] = []
        self.merged = 0  # urls[:merged] are merged
        self._lock = threading.Lock()

    def add(self, batch: dict) -> None:
        with self._lock:
            if batch.get("state") == "merged" and self.merged == len(self.urls):
                self.merged += 1
            self.urls.append(batch.get("url") or "")

    def check(self) -> None:
        with self._lock:
            total, merged = len(self.urls), self.merged
            urls = self.urls
        if merged >= total:
            return
        if self._is_merged(urls[total - 1]):
            merged = total
        elif merged < total - 1:
            middle = (merged + total - 1) // 2
            if self._is_merged(urls[middle]):
                merged = middle + 1
        with self._lock:
            self.merged = max(self.merged, merged)

    def _is_merged(self, url: str) -> bool:
        try:
            response = self.http.get(url, headers={"X-API-Key": self.api_key})
            return response.status_code == 200 and response.json().get("state") == "merged"
        except (httpx.HTTPError, ValueError, AttributeError):  # down, or not a batch
            return False


def wait_merged(watch: MergeWatch, seconds: float) -> None:
    """Check until every batch sent is merged, or `seconds` are up."""
    deadline = time.monotonic() + seconds
    watch.check()
    while watch.merged < len(watch.urls) and time.monotonic() < deadline:
        time.sleep(min(POLL_EVERY, max(0.0, deadline - time.monotonic())))
        watch.check()
