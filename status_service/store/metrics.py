"""What /metrics reads from Redis at scrape time, and the probers' counters it sums.

Keys: P{metrics}:counters, a hash of the probers' summed counters (field: see metrics.py); each
tenant's report hash holds `c`, the counts of its integrations by type and status as of the report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from . import Store, _text, _until


@dataclass(frozen=True)
class Scrape:
    """What one scrape read: every tenant's counts, the probers' counters, the oldest due time, fresh probers."""

    counts: dict[str, dict[str, dict[str, int]]]  # tenant -> type -> status -> integrations
    aged: dict[str, tuple[bytes, bytes]]  # tenant -> (body, stale times) of reports to count from their rows
    counters: dict[str, float]
    oldest_due: float | None  # epoch s of the earliest scheduled probe (claimed ones are pushed to their lease end; new ones left out)
    probers: int
    now: float  # Redis's clock


class Metrics:
    """The metrics' reads and writes, over the Store's client and key space."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def counters_key(self) -> str:
        """Return the key of the probers' summed counters."""
        return f"{self.store.prefix}{{metrics}}:counters"

    def add(self, counts: Mapping[str, float]) -> None:
        """Add a prober's counts to the sums (whole numbers stay whole)."""
        if not counts:
            return

        def run() -> None:
            pipe = self.store.client.pipeline(transaction=False)
            for name, value in counts.items():
                if float(value).is_integer():
                    pipe.hincrby(self.counters_key(), name, int(value))
                else:
                    pipe.hincrbyfloat(self.counters_key(), name, value)
            pipe.execute()

        self.store._call(run)

    def scrape(self) -> Scrape:
        """Read everything /metrics shows, in three to four round trips whatever the number of tenants."""
        s = self.store

        def run() -> Scrape:
            pipe = s.client.pipeline(transaction=False)
            pipe.smembers(s.tenants_key())
            pipe.hkeys(s.api_tenants_key())
            pipe.hgetall(self.counters_key())
            # Integrations new to the schedule are due at once (score 0 or below): they have waited no measurable time.
            pipe.zrangebyscore(s.due_key(), 1, "+inf", start=0, num=1, withscores=True)
            file_tenants, api_tenants, counters, oldest = pipe.execute()
            seconds, micros = s.client.time()  # not in a pipeline: a cluster client refuses that
            now = seconds + micros / 1e6
            tenants = sorted({_text(t) for t in file_tenants} | {_text(t) for t in api_tenants})
            pipe = s.client.pipeline(transaction=False)
            for tenant_id in tenants:
                pipe.hmget(s.report_key(tenant_id), ["c", "until"])
            pipe.zcount(s.probers_key(), int(now * 1000), "+inf")
            *reports, probers = pipe.execute()
            counts: dict[str, Any] = {}
            aged_ids = []
            for tenant_id, (raw, until) in zip(tenants, reports):
                if until is None:
                    continue  # no report yet
                if raw is None or _until(until) < now:
                    # No counts kept with it, or no prober rewrote it in time: its rows are counted, aged.
                    aged_ids.append(tenant_id)
                else:
                    counts[tenant_id] = json.loads(raw)
            pipe = s.client.pipeline(transaction=False)
            for tenant_id in aged_ids:
                pipe.hmget(s.report_key(tenant_id), ["body", "stale"])
            aged = {t: (body, stale or b"{}") for t, (body, stale) in zip(aged_ids, pipe.execute() if aged_ids else []) if body}
            return Scrape(
                counts=counts,
                aged=aged,
                counters={_text(k): float(v) for k, v in counters.items()},
                oldest_due=oldest[0][1] / 1000 if oldest else None,
                probers=int(probers),
                now=now,
            )

        return s._call(run)
