"""The real prober keeps probing healthy integrations on time while upstreams drip their headers."""
from __future__ import annotations

import sys
import time

import pytest
import yaml

from tests.conftest import environment, integration, key_digest, report_of, spawn, stop, wait_for
from tests.test_fetch import RawServer, drips_headers

HEALTHY = [f"/healthy/{i}" for i in range(6)]
RUN_S = 60.0  # the minute of hostile upstreams
WINDOW_S = 10.0
MIN_HITS = 7  # per window of 10 s, at an interval of 1 s
MAX_GAP_S = 3.0  # between two probes of one healthy integration, at an interval of 1 s


def hits_between(times: list[float], start: float, end: float) -> int:
    """Return how many of `times` fall in [start, end)."""
    return sum(start <= t < end for t in times)


@pytest.mark.parametrize("dripping", [1, 3])
def test_dripping_upstreams_do_not_stop_the_healthy_ones_being_probed(dripping, tmp_path, upstream, redis_url, prefix, store) -> None:
    drip = RawServer(drips_headers)
    document = {
        "probe": {"interval_seconds": 1, "timeout_seconds": 1},
        "prober": {"concurrency": 4},
        "tenants": [{
            "id": "acme",
            "api_keys": [{"sha256": key_digest("acme-key")}],
            "integrations": [integration(f"h{i}", "MJ", upstream.url(path)) for i, path in enumerate(HEALTHY)]
            + [integration(f"drip{j}", "DALL-E", f"{drip.base}/drip/{j}") for j in range(dripping)],
        }],
    }
    config = tmp_path / "status.yaml"
    config.write_text(yaml.safe_dump(document))
    log_path = tmp_path / "prober.log"
    with open(log_path, "wb") as log:
        prober = spawn([sys.executable, "-m", "status_service.prober"], environment(redis_url, prefix, config), log)
        try:
            wait_for(lambda: all(upstream.count(p) >= 1 for p in HEALTHY), timeout_s=15)
            started = time.monotonic()
            time.sleep(RUN_S)
            ended = time.monotonic()
            with upstream.lock:
                times = {p: list(upstream.times[p]) for p in HEALTHY}
            report = report_of(store, "acme")
        finally:
            stop(prober)
            drip.close()
    for window in range(int(RUN_S // WINDOW_S)):  # every 10 s of the minute, not just its ends
        start = started + window * WINDOW_S
        hits = {p: hits_between(t, start, start + WINDOW_S) for p, t in times.items()}
        assert all(n >= MIN_HITS for n in hits.values()), f"seconds {window * WINDOW_S:.0f}-{(window + 1) * WINDOW_S:.0f}: {hits}"
    gaps = {p: max(b - a for a, b in zip(t, t[1:])) for p, t in times.items() if any(started <= x < ended for x in t)}
    assert max(gaps.values()) < MAX_GAP_S, gaps
    assert all(drip.count(f"/drip/{j}") >= 2 for j in range(dripping))
    reasons = {i["id"]: i["reason"] for i in report["data"]["integrations"]}
    assert [reasons[f"drip{j}"] for j in range(dripping)] == ["timeout"] * dripping, reasons
    assert "Traceback" not in log_path.read_text()
