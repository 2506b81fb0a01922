"""GET /metrics: the Prometheus text format, for ops; never expose it publicly.

Three sources make one page. The web workers' own counters (requests by route and code, and their
latency) live in prometheus_client; under gunicorn each worker writes them to files in
PROMETHEUS_MULTIPROC_DIR (config/gunicorn.conf.py sets it) and a scrape sums every worker's. The
probers' counters are summed in Redis (see status_service/metrics.py). The integrations' states, the
probers' lag and their number are read from Redis at scrape time, so they are right whichever worker
answers and however many probers run.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from typing import Any, Iterable

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import metrics, report
from ..store import Store
from ..store.catalog import Catalog
from ..store.metrics import Metrics, Scrape
from .auth import AuthError

bp = Blueprint("metrics", __name__)
log = logging.getLogger("status_service.web")

STATES = ("healthy", "unhealthy", "unknown", "maintenance")

REQUESTS = Counter("status_http_requests", "HTTP requests answered, by route and status code.", ["route", "code"])
LATENCY = Histogram("status_http_request_duration_seconds", "How long HTTP requests took to answer, by route.", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


def install(app: Flask, token: str | None) -> None:
    """Count every request the app answers, and guard /metrics with `token` when one is set."""
    app.extensions["metrics_token"] = hashlib.sha256(token.encode()).digest() if token else None
    app.before_request(_started)
    app.after_request(_counted)


def _started() -> None:
    g.metrics_started = time.perf_counter()


_failed = False  # counting failed once (logged once)
_children: dict[tuple[str, int], tuple[Any, Any]] = {}  # (route, code) -> its two series: labels() costs a lock and a hash


def _counted(response: Response) -> Response:
    # The route's pattern, never the path: paths carry ids, and a label per id would grow without bound.
    route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    try:
        series = _children.get((route, response.status_code))
        if series is None:
            series = _children[route, response.status_code] = (REQUESTS.labels(route, str(response.status_code)), LATENCY.labels(route))
        series[0].inc()
        started = g.get("metrics_started")
        if started is not None:
            series[1].observe(time.perf_counter() - started)
    except OSError as exc:  # the multiprocess directory is gone or full: the request is answered all the same
        global _failed
        if not _failed:
            log.error("metrics.count_failed error=%s: check PROMETHEUS_MULTIPROC_DIR", exc.__class__.__name__)
            _failed = True
    return response


class RedisCollector(Collector):
    """The families read from Redis when /metrics is scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterable[object]:
        """Read Redis once and yield every family it feeds."""
        scrape = Metrics(self.store).scrape()
        by_tenant = bool(Catalog(self.store).settings().get("metrics", {}).get("tenant_label", False))
        yield _integrations(scrape, by_tenant)
        yield from metrics.families(scrape.counters)
        lag = GaugeMetricFamily("status_prober_lag_seconds",
                                "How long the oldest due integration has waited to be claimed (0: none waits).")
        lag.add_metric([], max(0.0, scrape.now - scrape.oldest_due) if scrape.oldest_due is not None else 0.0)
        yield lag
        yield GaugeMetricFamily("status_probers", "Probers with a fresh heartbeat.", value=scrape.probers)


def _integrations(scrape: Scrape, by_tenant: bool) -> GaugeMetricFamily:
    """Return integrations by type and state (and tenant, when the label is on), zeros included."""
    counts: dict[tuple[str, ...], int] = {}
    tallies = dict(scrape.counts)
    for tenant_id, (body, stale) in scrape.aged.items():
        # Past its stale time, or with no counts kept: counted from its rows as they are now.
        tallies[tenant_id] = report.tally(report.current(body, stale, -math.inf, scrape.now)["data"]["integrations"])
    for tenant_id, tallied in tallies.items():
        for kind, by_state in tallied.items():
            for state in (*STATES, *(s for s in by_state if s not in STATES)):
                key = (tenant_id, kind, state) if by_tenant else (kind, state)
                counts[key] = counts.get(key, 0) + by_state.get(state, 0)
    family = GaugeMetricFamily("status_integrations", "Integrations by type and state, as their reports say them.",
                               labels=["tenant", "type", "state"] if by_tenant else ["type", "state"])
    for labels, value in sorted(counts.items()):
        family.add_metric(list(labels), value)
    return family


@bp.get("/metrics")
def scrape() -> Response:
    """Return every metric in the Prometheus text format."""
    wanted = current_app.extensions["metrics_token"]
    if wanted is not None:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        # Compared as digests: constant time whatever the token's length.
        if scheme.lower() != "bearer" or not hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), wanted):
            raise AuthError("/metrics needs 'Authorization: Bearer <STATUS_METRICS_TOKEN>'")
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # every worker's counters, summed
    else:
        for collector in (REQUESTS, LATENCY):  # one process: its own counters
            registry.register(collector)
    registry.register(RedisCollector(current_app.extensions["status_web"].store))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)  # as is: mimetype= would add a second charset
