"""Prometheus metrics that the probers count: what they add up between flushes, and the families built from it.

A prober serves no HTTP, so it adds its counts to a hash in Redis (store/metrics.py) every few
seconds, and the web tier exposes the sums at scrape time: any number of probers, one set of series.
A counter lives under a JSON list of its family and label values; no label carries an integration id.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

PROBE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVERY_RESULTS = ("delivered", "failed", "dead")  # a 2xx; an attempt that failed (retried later); dead-lettered


class Tally:
    """Counts a prober adds up between flushes; thread-safe, since probes finish on pool threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def probe(self, kind: str, reason: str | None, seconds: float) -> None:
        """Count one probe of an integration of type `kind`: its reason ("ok" when it passed) and its duration."""
        with self._lock:
            self._counts[_field("probes", kind, reason or "ok")] += 1
            for le in PROBE_BUCKETS_S:
                if seconds <= le:
                    self._counts[_field("probe_bucket", kind, repr(le))] += 1
            self._counts[_field("probe_count", kind)] += 1
            self._counts[_field("probe_sum", kind)] += seconds

    def delivery(self, result: str) -> None:
        """Count one webhook delivery attempt by its result (see DELIVERY_RESULTS)."""
        with self._lock:
            self._counts[_field("deliveries", result)] += 1

    def take(self) -> dict[str, float]:
        """Return what was counted since the last take, and start again from zero."""
        with self._lock:
            taken, self._counts = dict(self._counts), Counter()
        return taken

    def give_back(self, counts: Mapping[str, float]) -> None:
        """Add back counts that could not be flushed, so the next flush carries them."""
        with self._lock:
            self._counts.update(counts)


def _field(*parts: str) -> str:
    return json.dumps(parts, separators=(",", ":"))


def families(counters: Mapping[str, float]) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
    """Return the probers' families from the summed counters (field -> value) read from Redis."""
    probes = CounterMetricFamily("status_probes", "Probes run, by integration type and reason (ok when it passed).",
                                 labels=["type", "reason"])
    deliveries = CounterMetricFamily("status_webhook_deliveries", "Webhook delivery attempts, by result.", labels=["result"])
    buckets: dict[str, dict[str, float]] = {}
    sums: dict[str, float] = {}
    for raw, value in sorted(counters.items()):
        family, *labels = json.loads(raw)
        if family == "probes":
            probes.add_metric(labels, value)
        elif family == "deliveries":
            deliveries.add_metric(labels, value)
        elif family == "probe_bucket":
            buckets.setdefault(labels[0], {})[labels[1]] = value
        elif family == "probe_count":
            buckets.setdefault(labels[0], {})["+Inf"] = value
        elif family == "probe_sum":
            sums[labels[0]] = value
    for result in DELIVERY_RESULTS:  # every result shows, 0 until it happens: a rate over it is never absent
        if not any(m.labels["result"] == result for m in deliveries.samples):
            deliveries.add_metric([result], 0.0)
    durations = HistogramMetricFamily("status_probe_duration_seconds", "How long probes took, by integration type.",
                                      labels=["type"])
    for kind, counted in sorted(buckets.items()):
        # Counted cumulative already (a probe adds to every bucket it fits), as Prometheus wants them.
        cumulative = [(repr(le), counted.get(repr(le), 0.0)) for le in PROBE_BUCKETS_S]
        durations.add_metric([kind], [*cumulative, ("+Inf", counted.get("+Inf", 0.0))], sums.get(kind, 0.0))
    return [probes, durations, deliveries]
