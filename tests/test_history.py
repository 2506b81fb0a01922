"""History: pure rollups and uptime by hand and by property, then the endpoints over a real prober and Redis."""
from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import given, settings, strategies as st

from status_service import rollup
from status_service.compactor import SETTLE_S, Compactor
from status_service.rollup import Bucket, Check, Point, Track
from status_service.store.history import History
from tests.conftest import integration, make_registry, run_round, tenant

H, U = "healthy", "unhealthy"


def uptime(buckets: list[Bucket], start: float, end: float) -> tuple[float | None, float]:
    """Uptime and coverage over [start, end), as the integration endpoint computes them."""
    return rollup.ratio(*rollup.Ledger(buckets).sums(start, end), end - start)


def checks(*items: tuple[float, str]) -> tuple[Check, ...]:
    return tuple(Check(at, status == H, status, latency_ms=100) for at, status in items)


# -- pure ------------------------------------------------------------------------------------------

def test_a_status_holds_until_the_next_check_or_until_it_turns_stale() -> None:
    track = Track("1", "MJ", 90, checks((0, H), (30, U), (200, H)))
    assert rollup.segments(track, 0, 300) == [(0, 30, H), (30, 120, U), (200, 290, H)]
    assert rollup.segments(track, 100, 250) == [(100, 120, U), (200, 250, H)]  # cut by the range


def test_minute_points_are_exact_for_checks_every_30_seconds() -> None:
    # 1 fails at 30 and recovers at 90; 2 stays healthy. Percentages: 100 for 30 s, 50 for 60 s, 100 after.
    tracks = [Track("1", "MJ", 90, checks((0, H), (30, U), (60, U), (90, H), (120, H), (150, H))),
              Track("2", "DALL-E", 90, checks((0, H), (30, H), (60, H), (90, H), (120, H), (150, H)))]
    points = rollup.scope_points(tracks, 0, 180, 60)
    overall = points[rollup.OVERALL]
    assert [(p.start, p.covered_s, p.integral / p.covered_s, p.low, p.high) for p in overall] == [
        (0, 60, 75.0, 50.0, 100.0), (60, 60, 75.0, 50.0, 100.0), (120, 60, 100.0, 100.0, 100.0)]
    assert [(p.integral / 60, p.low, p.high) for p in points["type:MJ"]] == [(50.0, 0.0, 100.0), (50.0, 0.0, 100.0), (100.0, 100.0, 100.0)]
    assert [p.integral / 60 for p in points["type:DALL-E"]] == [100.0, 100.0, 100.0]
    series = rollup.series(overall, 0, 180, 180)
    assert series == [{"at": 0, "healthy_percentage": 83.33, "min": 50.0, "max": 100.0, "status": "degraded"}]


def test_unknown_time_counts_as_not_healthy_in_a_percentage_and_in_neither_part_of_uptime() -> None:
    # A gap from 90 (stale after 60 s of silence) to 300.
    track = Track("1", "MJ", 90, checks((0, H), (300, H)))
    points = rollup.scope_points([track], 0, 360, 60)[rollup.OVERALL]
    assert [p.integral / p.covered_s for p in points] == [100.0, 50.0, 0.0, 0.0, 0.0, 100.0]
    buckets = rollup.integration_buckets(track, 0, 360, 300)
    assert [(b.start, b.covered_s, b.checks, b.healthy_s, b.unhealthy_s) for b in buckets] == [(0, 300, 1, 90, 0), (300, 60, 1, 60, 0)]
    assert uptime(buckets, 0, 360) == (100.0, 41.667)  # 150 s known of 360


def test_uptime_is_time_weighted_and_a_bucket_cut_by_the_window_counts_in_proportion() -> None:
    buckets = [Bucket(0, 300, healthy_s=300), Bucket(300, 300, healthy_s=100, unhealthy_s=200)]
    assert uptime(buckets, 0, 600) == (round(100 * 400 / 600, 3), 100.0)
    # From 450: half of the second bucket, 50 s healthy and 100 s unhealthy.
    assert uptime(buckets, 450, 600) == (round(100 * 50 / 150, 3), 100.0)
    assert uptime([], 0, 600) == (None, 0.0)


def test_quantiles_come_from_a_histogram_within_ten_percent() -> None:
    histogram: dict[int, int] = {}
    for ms in range(1, 1001):
        k = rollup.latency_index(ms)
        histogram[k] = histogram.get(k, 0) + 1
    got = rollup.quantiles(histogram, (0.5, 0.95, 0.99))
    for q, exact in ((0.5, 500), (0.95, 950), (0.99, 990)):
        assert exact <= got[q] <= exact * 1.1
    assert rollup.quantiles({}, (0.5,)) == {0.5: None}
    assert rollup.latency_bound(rollup.latency_index(0)) == 1


def test_rollups_and_points_read_back_as_written() -> None:
    b = Bucket(1800000000.0, 300.0, 10, 2, 250.5, 49.5, {3: 4, 70: 6})
    assert Bucket.decode(b.encode()) == b
    p = Point(1800000000.0, 60.0, 4500.0, 50.0, 100.0)
    assert Point.decode(p.encode()) == p


statuses = st.sampled_from([H, U, "unknown"])
check_lists = st.lists(st.tuples(st.integers(0, 3000), statuses, st.booleans(), st.integers(0, 20000)), max_size=40)


def _track(iid: str, kind: str, raw: list) -> Track:
    items = sorted({at: (status, ok, ms) for at, status, ok, ms in raw}.items())
    return Track(iid, kind, 90, tuple(Check(float(at), ok, status, ms) for at, (status, ok, ms) in items))


@settings(max_examples=150, deadline=None)
@given(check_lists, check_lists, st.integers(1, 2999))
def test_folding_in_two_pieces_equals_folding_at_once(a: list, b: list, cut: int) -> None:
    """What the compactor does each pass (fold up to a cursor, then on from it) must equal one fold."""
    tracks = [_track("1", "MJ", a), _track("2", "MJ", b)]
    whole = rollup.integration_buckets(tracks[0], 0, 3000, 300)
    pieces = rollup.merge_buckets(rollup.integration_buckets(tracks[0], 0, cut, 300)
                                  + rollup.integration_buckets(tracks[0], cut, 3000, 300), 300)
    assert [(x.start, x.covered_s, x.checks, x.failures, x.latency) for x in whole] == \
           [(x.start, x.covered_s, x.checks, x.failures, x.latency) for x in pieces]
    for x, y in zip(whole, pieces):
        assert math.isclose(x.healthy_s, y.healthy_s, abs_tol=1e-6) and math.isclose(x.unhealthy_s, y.unhealthy_s, abs_tol=1e-6)
    once = rollup.merge_points(rollup.scope_points(tracks, 0, 3000, 60)[rollup.OVERALL], 300)
    twice = rollup.merge_points(rollup.scope_points(tracks, 0, cut, 60)[rollup.OVERALL]
                                + rollup.scope_points(tracks, cut, 3000, 60)[rollup.OVERALL], 300)
    assert [(p.start, p.covered_s, p.low, p.high) for p in once] == [(p.start, p.covered_s, p.low, p.high) for p in twice]
    for x, y in zip(once, twice):
        assert math.isclose(x.integral, y.integral, abs_tol=1e-6)
        assert x.low <= x.integral / x.covered_s + 1e-9 <= x.high + 2e-9


@settings(max_examples=100, deadline=None)
@given(check_lists, st.integers(0, 3000), st.integers(1, 3000))
def test_uptime_is_between_0_and_100_and_coverage_never_exceeds_the_window(raw: list, start: int, span: int) -> None:
    track = _track("1", "MJ", raw)
    buckets = rollup.integration_buckets(track, 0, 6000, 300)
    up, coverage = uptime(buckets, start, start + span)
    assert 0.0 <= coverage <= 100.0
    assert up is None or 0.0 <= up <= 100.0
    assert (up is None) == (coverage == 0.0)


# -- over a real prober and Redis ------------------------------------------------------------------

KEY, OTHER_KEY = "acme-history-key", "globex-history-key"


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def lived(upstream, make_prober, store):
    """acme: integration 1 fails at 30 s and recovers at 90 s, 2 stays healthy; ten minutes, an hour ago."""
    reg = make_registry([
        tenant("acme", [KEY], [integration("1", "MJ", upstream.url("/one")),
                               integration("2", "DALL-E", upstream.url("/two"))]),
        tenant("globex", [OTHER_KEY], [integration("g", "MJ", upstream.url("/g"))]),
    ], probe={"interval_seconds": 30, "failure_threshold": 1})
    t0 = math.floor(time.time() / 3600) * 3600 - 3600
    clock = Clock(t0)
    prober = make_prober(reg, clock=clock)
    for n in range(20):
        clock.at = t0 + 30 * n
        upstream.routes["/one"].status = 500 if n in (1, 2) else 200
        run_round(prober)
    clock.at = t0 + 600 + SETTLE_S
    assert prober.compact() == 2
    return t0, prober


def an_hour_ago(upstream, make_prober, ids: tuple[str, ...] = ("1", "2")):
    """Return (t0, clock, prober): a prober on acme's integrations, its clock at the start of the hour an hour ago."""
    reg = make_registry([tenant("acme", [KEY], [integration(i, "MJ", upstream.url(f"/{'one' if i == '1' else 'two'}")) for i in ids])],
                        probe={"interval_seconds": 30, "failure_threshold": 1})
    t0 = math.floor(time.time() / 3600) * 3600 - 3600
    clock = Clock(t0)
    return t0, clock, make_prober(reg, clock=clock)


def get(client, path: str, key: str = KEY):
    return client.get(path, headers={"Authorization": f"Bearer {key}"})


def test_each_transition_is_an_event_once_in_time_order(client, lived) -> None:
    t0, prober = lived
    body = get(client, "/status/events").get_json()
    mine = [(e["scope"], (e["integration"] or {}).get("id") or e.get("type"), e["previous"], e["current"]) for e in body["events"]]
    changes = [m for m in mine if m[0] == "integration"]
    assert sorted(changes[:2]) == [("integration", "1", "unknown", H), ("integration", "2", "unknown", H)]  # probed together
    assert changes[2:] == [("integration", "1", H, U), ("integration", "1", U, H)]
    assert ("status", None, "ok", "degraded") in mine and ("status", None, "degraded", "ok") in mine
    assert ("type", "MJ", "ok", "unhealthy") in mine
    ids = [e["id"] for e in body["events"]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    failed = next(e for e in body["events"] if e["scope"] == "integration" and e["current"] == U)
    assert failed["at"].endswith("Z") and failed["reason"] == "http_500" and failed["integration"] == {"id": "1", "type": "MJ"}
    # Paged by the cursor: every event once, none missing.
    seen, since = [], None
    while True:
        page = get(client, "/status/events?limit=2" + (f"&since={since}" if since else "&since=2000-01-01T00:00:00Z")).get_json()
        seen += [e["id"] for e in page["events"]]
        if not page["events"]:
            break
        since = page["next"]
    assert seen == ids


def test_an_integration_shows_its_state_checks_uptime_and_latency(client, lived) -> None:
    t0, _ = lived
    body = get(client, "/status/integrations/1").get_json()
    assert body["id"] == "1" and body["type"] == "MJ" and body["consecutive_failures"] == 0
    assert body["since"] == rollup_iso(t0 + 90)
    assert len(body["last_checks"]) == 20 and body["last_checks"][0]["at"] == rollup_iso(t0 + 570)
    assert [c["ok"] for c in body["last_checks"]][-3:] == [False, False, True]  # newest first
    # Checked from t0 to t0 + 570, then known for 90 s more: 660 s known, 60 unhealthy (30-90).
    assert body["uptime"]["24h"] == round(100 * 600 / 660, 3)
    assert body["coverage"]["24h"] == round(100 * 660 / 86400, 3)
    assert body["uptime"]["30d"] == body["uptime"]["7d"] == body["uptime"]["24h"]  # from hourly rollups, the same
    assert body["coverage"]["30d"] == round(100 * 660 / (30 * 86400), 3)
    # Every check of the 24 hours is among the last 20: the percentiles are theirs, within 10 % above.
    latencies = sorted(c["latency_ms"] for c in body["last_checks"])
    for q, rank in (("p50", 10), ("p95", 19), ("p99", 20)):
        assert latencies[rank - 1] <= body["latency_ms"][q] <= max(1, latencies[rank - 1] * 1.1)


def test_history_points_are_the_minute_values_a_hand_computes(client, lived) -> None:
    t0, _ = lived
    body = get(client, "/status/history?window=2h&step=1m").get_json()
    points = {p["at"]: p for p in body["points"]}
    assert points[rollup_iso(t0)] == {"at": rollup_iso(t0), "healthy_percentage": 75.0, "min": 50.0, "max": 100.0, "status": "degraded"}
    assert points[rollup_iso(t0 + 60)]["healthy_percentage"] == 75.0
    assert points[rollup_iso(t0 + 120)] == {"at": rollup_iso(t0 + 120), "healthy_percentage": 100.0, "min": 100.0, "max": 100.0, "status": "ok"}
    mj = get(client, "/status/history?window=2h&step=1h&type=MJ").get_json()["points"]
    assert mj[0]["at"] == rollup_iso(t0) and mj[0]["min"] == 0.0 and mj[0]["status"] == "unhealthy"
    assert body["complete_until"] == rollup_iso(t0 + 600)


def rollup_iso(epoch: float) -> str:
    from status_service.report import iso
    return iso(epoch)


def test_a_tenant_never_sees_another_tenants_history(client, lived) -> None:
    assert get(client, "/status/integrations/g").status_code == 404  # globex's id, asked by acme
    assert get(client, "/status/integrations/nope").status_code == 404
    assert get(client, "/status/integrations/g", OTHER_KEY).status_code == 200
    theirs = get(client, "/status/events", OTHER_KEY).get_json()["events"]
    assert theirs and all((e["integration"] or {}).get("id", "g") == "g" for e in theirs)
    assert get(client, "/status/history?window=2h&step=1m&type=DALL-E", OTHER_KEY).get_json()["points"] == []


@pytest.mark.parametrize("query,name", [
    ("window=0h", "window"), ("window=30m", "window"), ("window=401d", "window"), ("window=24", "window"),
    ("window=1w", "window"), ("window=-1h", "window"), ("window=%00", "window"), ("window=" + "9" * 40 + "d", "window"),
    ("step=0m", "step"), ("step=2d", "step"), ("step=30s", "step"), ("step=1.5h", "step"),
    ("window=7d&step=1m", "step"),  # 10,080 points
    ("window=30d&step=5m", "step"),  # 8,640 points
    ("window=20d&step=15m", "step"),  # 1,920 points, but 20 days ago only hourly data is kept
    ("window=3d&step=7m", "step"),  # 3 days ago only 5-minute data is kept
    ("type=", "type"), ("type=a%0Ab", "type"), ("type=" + "x" * 201, "type"),
])
def test_every_bad_history_parameter_gets_400_naming_it(client, lived, query: str, name: str) -> None:
    response = get(client, f"/status/history?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"]["code"] == "invalid_request" and list(body["fields"]) == [f"query.{name}"]
    assert body["error"]["message"].startswith(f"{name}: ")


def test_a_step_too_fine_for_the_age_names_the_finest_step_allowed(client, lived) -> None:
    message = get(client, "/status/history?window=20d&step=15m").get_json()["error"]["message"]
    assert "1h" in message
    assert get(client, "/status/history?window=20d&step=1h").status_code == 200
    assert get(client, "/status/history?window=400d&step=1d").status_code == 200
    assert get(client, "/status/history?window=3d&step=10m").status_code == 200


@pytest.mark.parametrize("query,name", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"), ("limit=", "limit"),
    ("since=yesterday", "since"), ("since=2026-01-01T00:00:00", "since"), ("since=1-2-3", "since"),
    ("since=99999999999999999999-0", "since"), ("since=1-99999999999999999999", "since"), ("since=1999-01-01T00:00:00Z", "since"),
])
def test_every_bad_events_parameter_gets_400_naming_it(client, lived, query: str, name: str) -> None:
    response = get(client, f"/status/events?{query}")
    assert response.status_code == 400 and list(response.get_json()["fields"]) == [f"query.{name}"]


def test_history_needs_the_same_key_as_status(client, lived) -> None:
    for path in ("/status/history", "/status/integrations/1", "/status/events"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_late_check_behind_the_cursor_is_folded_in_by_the_next_compaction(store, upstream, make_prober) -> None:
    t0, clock, prober = an_hour_ago(upstream, make_prober)
    run_round(prober)
    clock.at = t0 + 120 + SETTLE_S
    prober.compact()
    history = History(store)
    # Probed at t0 + 60 but recorded only now, behind the cursor (a prober that stalled).
    clock.at = t0 + 60
    upstream.routes["/two"].status = 500
    store.client.zadd(store.due_key(), {"acme\x1f2": 0})
    prober.tick()
    prober.drain()
    assert history.marks(["acme"])["acme"].late == t0 + 60  # the late mark
    clock.at = t0 + 125 + SETTLE_S
    prober.compact()
    assert history.marks(["acme"])["acme"].late is None
    minutes = history.points("acme", rollup.OVERALL, 60, t0, t0 + 120)
    assert [p.integral / p.covered_s for p in minutes] == [100.0, 50.0]


def test_a_removed_tenant_and_a_removed_integration_leave_no_history(store, lived, make_prober) -> None:
    t0, prober = lived
    base = store.tenant_base("acme")
    assert store.client.exists(base + "checks:1", base + "r300:1", base + "events", base + "s60:")
    reg = make_registry([tenant("globex", [OTHER_KEY], [integration("g", "MJ", "http://127.0.0.1:9/")])], generation=1)
    make_prober(reg).tick()
    assert list(store.client.scan_iter(match=base.replace("{", "[{]").replace("}", "[}]") + "*")) == []


def test_two_prober_processes_keep_each_check_and_each_transition_once(tmp_path, upstream, redis_url, prefix, settings, store) -> None:
    import signal

    import yaml

    from status_service import create_app
    from tests.conftest import environment, key_digest, start_prober, stop, wait_for

    ids = ["1", "2", "3"]
    document = {
        "probe": {"interval_seconds": 1, "timeout_seconds": 0.5, "failure_threshold": 1},
        "prober": {"tick_seconds": 0.2},
        "history": {"compact_every_seconds": 1},
        "tenants": [{"id": "acme", "api_keys": [{"sha256": key_digest(KEY)}],
                     "integrations": [integration(i, "MJ", upstream.url(f"/{i}")) for i in ids]}],
    }
    config = tmp_path / "status.yaml"
    config.write_text(yaml.safe_dump(document))
    env = environment(redis_url, prefix, config)
    with open(tmp_path / "probers.log", "wb") as log:
        probers = [start_prober(env, log), start_prober(env, log)]
        try:
            wait_for(lambda: all(upstream.count(f"/{i}") >= 3 for i in ids), timeout_s=20)
            upstream.routes["/1"].status = 500  # down...
            wait_for(lambda: _current(store, "1") == U, timeout_s=10)
            time.sleep(1.5)
            upstream.routes["/1"].status = 200  # ...and up again
            wait_for(lambda: _current(store, "1") == H, timeout_s=10)
            probers[0].send_signal(signal.SIGKILL)  # the other goes on alone
            probers[0].wait(5)
            before = {i: store.client.xlen(store.tenant_base("acme") + f"checks:{i}") for i in ids}
            # The survivor goes on (once the killed one's leases run out) writing every check.
            wait_for(lambda: all(store.client.xlen(store.tenant_base("acme") + f"checks:{i}") >= before[i] + 2 for i in ids),
                     timeout_s=15)
        finally:
            for p in probers:
                stop(p)  # SIGTERM: in-flight probes are recorded before it exits
    web = create_app(settings).test_client()
    events = get(web, "/status/events?limit=1000").get_json()["events"]
    by_integration = {i: [(e["previous"], e["current"]) for e in events if (e["integration"] or {}).get("id") == i] for i in ids}
    assert by_integration == {"1": [("unknown", H), (H, U), (U, H)], "2": [("unknown", H)], "3": [("unknown", H)]}
    base = store.tenant_base("acme")
    for i in ids:
        kept = store.client.xrange(base + f"checks:{i}")
        at = [int(eid.split(b"-")[0]) for eid, _ in kept]
        assert at == sorted(at) and len(set(at)) == len(at)  # none doubled
        # Each probe that reached the upstream is one check; only a probe cut off by SIGKILL may be missing.
        assert upstream.count(f"/{i}") - 1 <= len(kept) <= upstream.count(f"/{i}")
    # Folded by the probers a few seconds behind the checks (one is enough now, folding each second).
    with open(tmp_path / "folder.log", "wb") as log:
        folder = start_prober(env, log)
        try:
            wait_for(lambda: any(p["min"] < 100.0 for p in get(web, "/status/history?window=1h&step=1m").get_json()["points"]), timeout_s=20)
        finally:
            stop(folder)
    points = get(web, "/status/history?window=1h&step=1m").get_json()["points"]
    assert all(p["max"] > 0.0 for p in points)  # none before the first check: history begins there


def _current(store, iid: str) -> str | None:
    import json as _json

    raw = store.client.hget(store.results_key("acme"), iid)
    return _json.loads(raw)["status"] if raw else None


buckets_strategy = st.lists(st.tuples(st.integers(0, 100), st.integers(1, 300), st.integers(0, 300), st.integers(0, 300)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(buckets_strategy, st.integers(-100, 20000), st.integers(0, 20000))
def test_a_ledger_sums_any_window_as_adding_every_bucket_in_proportion_does(raw: list, start: int, span: int) -> None:
    buckets, at = [], 0.0
    for gap, covered, healthy, unhealthy in raw:  # in order, apart, each no fuller than it is long
        at += gap
        buckets.append(Bucket(at, covered, healthy_s=min(healthy, covered), unhealthy_s=min(unhealthy, covered - min(healthy, covered))))
        at += covered
    naive_h = naive_u = 0.0
    for b in buckets:
        share = max(0.0, min(b.start + b.covered_s, start + span) - max(b.start, start)) / b.covered_s
        naive_h += b.healthy_s * share
        naive_u += b.unhealthy_s * share
    healthy, unhealthy = rollup.Ledger(buckets).sums(start, start + span)
    assert math.isclose(healthy, naive_h, abs_tol=1e-6) and math.isclose(unhealthy, naive_u, abs_tol=1e-6)


# -- what a review broke, each now a test ---------------------------------------------------------

def test_a_check_written_while_its_stretch_is_folded_is_folded_by_the_next_pass(store, upstream, make_prober) -> None:
    t0, clock, prober = an_hour_ago(upstream, make_prober)
    for n in range(3):
        clock.at = t0 + 30 * n
        run_round(prober)
    clock.at = t0 + 62 + SETTLE_S
    assert prober.compact() == 1
    history = History(store)
    # A fold of [cursor, t0 + 100) has read the checks (what Compactor._compact does first)...
    marks = history.marks(["acme"])["acme"]
    history.folding("acme", t0 + 100, 30)
    read = history.checks("acme", ["1", "2"], marks.cursor)
    # ...when another prober records a check at t0 + 90, inside that stretch.
    clock.at = t0 + 90
    upstream.routes["/two"].status = 500
    store.client.zadd(store.due_key(), {"acme\x1f2": 0})
    prober.tick()
    prober.drain()
    assert history.marks(["acme"])["acme"].late == t0 + 90
    assert not history.write("acme", marks, t0 + 100, marks.began, [], {})  # that fold's write is refused
    assert len(read["2"]) < len(history.checks("acme", ["2"], marks.cursor)["2"])
    clock.at = t0 + 200 + SETTLE_S
    assert prober.compact() == 1  # and the next one folds it in
    raw = history.checks("acme", ["2"], t0)["2"]
    kept = history.buckets("acme", "2", 300, t0)[0]
    exact = rollup.integration_buckets(Track("2", "MJ", 90, tuple(raw)), t0, t0 + 200, 300)[0]
    assert (kept.checks, kept.failures, kept.healthy_s, kept.unhealthy_s) == (exact.checks, exact.failures, exact.healthy_s, exact.unhealthy_s)
    assert [p.integral / p.covered_s for p in history.points("acme", rollup.OVERALL, 60, t0, t0 + 120)] == [100.0, 75.0]


def test_a_check_at_the_very_ms_a_fold_ends_is_folded_once(store, upstream, make_prober) -> None:
    t0, clock, prober = an_hour_ago(upstream, make_prober, ("1",))
    for n in range(3):
        clock.at = t0 + 30 * n
        run_round(prober)
    clock.at = t0 + 60 + SETTLE_S + 0.0004  # the fold ends 0.4 ms after the check at t0 + 60
    assert prober.compact() == 1
    clock.at = t0 + 200 + SETTLE_S
    assert prober.compact() == 1
    history = History(store)
    kept = history.buckets("acme", "1", 300, t0)[0]
    assert kept.checks == len(history.checks("acme", ["1"], t0)["1"]) == 3 and sum(kept.latency.values()) == 3


def test_a_tenant_made_again_under_its_id_never_sees_the_old_ones_integrations(redis_url, prefix, store, make_prober) -> None:
    from status_service import create_app
    from status_service.settings import Settings
    from tests.conftest import TEST_SECRET_KEY, key_digest

    reg = make_registry([], admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    make_prober(reg).tick()
    admin = {"Authorization": "Bearer admin-secret"}
    # Memory on: the worker keeps reports, and history keeps its memo.
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix)).test_client()

    def make(iid: str) -> dict:
        assert web.post("/admin/tenants", json={"id": "acme"}, headers=admin).status_code == 201
        key = web.post("/admin/tenants/acme/keys", headers=admin).get_json()["key"]
        body = {"type": "MJ", "probe": {"url": "https://provider.example/health"}}
        assert web.put(f"/admin/tenants/acme/integrations/{iid}", json=body, headers=admin).status_code == 201
        return {"Authorization": f"Bearer {key}"}

    old = make("old-secret")
    assert web.get("/status/integrations/old-secret", headers=old).status_code == 200
    assert web.delete("/admin/tenants/acme", headers=admin).status_code == 204
    new = make("new")
    assert web.get("/status/integrations/old-secret", headers=new).status_code == 404
    assert web.get("/status/integrations/new", headers=new).status_code == 200


def test_a_type_no_integration_has_any_more_is_trimmed_like_the_others(store, upstream, make_prober) -> None:
    short = {"raw_hours": 1, "five_minute_days": 1, "hourly_days": 1}
    before = make_registry([tenant("acme", [KEY], [integration("1", "OLD", upstream.url("/one"))])],
                           probe={"interval_seconds": 30}, history=short)
    t0 = math.floor(time.time() / 3600) * 3600 - 3 * 86400
    clock = Clock(t0)
    run_round(make_prober(before, clock=clock))
    history = History(store)
    compactor = Compactor(history, before.history, "test")
    assert compactor.compact("acme", before.tenants[0].integrations, t0 + 60)
    base = store.tenant_base("acme")
    assert store.client.exists(base + "s60:type:OLD", base + "s3600:type:OLD") == 2
    after = make_registry([tenant("acme", [KEY], [integration("1", "NEW", upstream.url("/one"))])],
                          probe={"interval_seconds": 30}, history=short)
    assert compactor.compact("acme", after.tenants[0].integrations, t0 + 2 * 86400)
    assert store.client.exists(base + "s60:type:OLD", base + "s300:type:OLD", base + "s3600:type:OLD") == 0
    assert not any(k.startswith(b"s") and b"OLD" in k for k in store.client.smembers(base + "history:keys"))


@pytest.mark.parametrize("window", ["1h", "24h", "7d", "14d", "30d", "90d", "400d"])
def test_the_default_step_is_allowed_for_every_window(client, lived, window: str) -> None:
    response = get(client, f"/status/history?window={window}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(response.get_json()["points"]) <= 2000


def test_a_suggested_step_is_an_allowed_one_and_no_answer_exceeds_2000_points(client, lived) -> None:
    message = get(client, "/status/history?window=30d&step=1m").get_json()["error"]["message"]
    suggested = message.rsplit(" ", 1)[1]
    assert get(client, f"/status/history?window=30d&step={suggested}").status_code == 200
    assert get(client, "/status/history?window=2000m&step=1m").status_code == 200  # 2,000 steps, none beyond


@pytest.mark.parametrize("query,status", [
    ("limit=%C2%B2", 400), ("limit=%D9%A1%D9%A0", 400), ("since=9999-12-31T23:59:59-01:00", 400), ("window=24h%0A", 400),
    ("since=2026-W01-1T00:00Z", 200),  # an ISO week date: valid ISO 8601
    ("since=1-2", 200), ("since=000000000000000-00000000000000000000", 200),
])
def test_odd_numbers_and_times_get_a_clear_answer_never_500(client, lived, query: str, status: int) -> None:
    path = "/status/history?" if query.startswith("window") else "/status/events?"
    assert get(client, path + query).status_code == status


def test_next_after_a_time_with_no_events_yet_is_a_cursor_that_misses_nothing(client, lived) -> None:
    t0, _ = lived
    later = rollup_iso(t0 + 60)
    page = get(client, f"/status/events?since={later}").get_json()
    assert page["events"] and all(e["at"] >= later for e in page["events"])
    empty = get(client, "/status/events?since=2100-01-01T00:00:00Z").get_json()
    assert empty["events"] == [] and empty["next"] and get(client, f"/status/events?since={empty['next']}").status_code == 200


def test_with_history_off_nothing_is_kept(store, upstream, make_prober, client) -> None:
    reg = make_registry([tenant("acme", [KEY], [integration("1", "MJ", upstream.url("/one"))])], history={"enabled": False})
    prober = make_prober(reg)
    run_round(prober)
    assert prober.compact() == 0
    assert not list(store.client.scan_iter(match=store.tenant_base("acme").replace("{", "[{]").replace("}", "[}]") + "*history*"))
    assert store.client.exists(store.tenant_base("acme") + "checks:1", store.tenant_base("acme") + "events") == 0
    assert get(client, "/status/events").get_json() == {"events": [], "next": None}
    assert get(client, "/status/integrations/1").get_json()["last_checks"] == []


def test_a_report_says_no_status_before_anything_is_checked_so_none_is_an_event() -> None:
    from status_service.model import Health, Integration, ProbeSpec, State
    from status_service.report import TenantReport

    spec = ProbeSpec(url="https://provider.example/")
    view = TenantReport([Integration("acme", "1", "MJ", spec), Integration("acme", "2", "DALL-E", spec)])
    assert view.statuses() == {}
    view.apply({"1": State(Health.HEALTHY, 100.0)}, 100.0)
    assert view.statuses() == {"type:MJ": "ok", "": "degraded"}  # 2 is unknown: not healthy, as /status counts it


def test_history_survives_redis_killed_and_restarted_from_its_append_only_file(tmp_path, upstream, make_prober) -> None:
    """SIGKILL the embedded Redis (AOF, fsync every second) a second and a half after the last write: every check,
    event and state is there again, each state beside the check it was written with."""
    import signal
    import subprocess

    from status_service import embedded
    from status_service.store import Store, connect

    directory = tmp_path / "redis"
    directory.mkdir()
    sock = embedded.socket_path(directory)

    def start() -> subprocess.Popen:
        process = subprocess.Popen(embedded.server_command(directory, sock, daemonize=False), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL)
        embedded.wait_until_answers(sock)
        return process

    server = start()
    try:
        store = Store(connect(f"unix://{sock}"), "test:")
        reg = make_registry([tenant("acme", [KEY], [integration(i, "MJ", upstream.url(f"/{i}")) for i in "123"])],
                            probe={"interval_seconds": 30, "failure_threshold": 1})
        t0 = math.floor(time.time() / 3600) * 3600 - 3600
        clock = Clock(t0)
        prober = make_prober(reg, clock=clock, store=store)
        for n in range(6):
            clock.at = t0 + 30 * n
            upstream.routes["/2"].status = 500 if n % 2 else 200
            run_round(prober)
        base = store.tenant_base("acme")
        kept = {i: store.client.xlen(base + f"checks:{i}") for i in "123"}
        events = store.client.xlen(base + "events")
        time.sleep(1.5)  # past the AOF's once-a-second fsync
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = start()
        again = Store(connect(f"unix://{sock}"), "test:")
        assert {i: again.client.xlen(base + f"checks:{i}") for i in "123"} == kept == {"1": 6, "2": 6, "3": 6}
        assert again.client.xlen(base + "events") == events
        for i in "123":  # each state and the newest check of it: written together, kept together
            state = json.loads(again.client.hget(again.results_key("acme"), i))
            newest = again.client.xrevrange(base + f"checks:{i}", count=1)[0][0]
            assert int(newest.split(b"-")[0]) == round(state["checked_at"] * 1000)
    finally:
        server.terminate()
        server.wait(10)
