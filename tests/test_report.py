"""The /status document: the seed's contract, counts, rounding, per-type stats, order, freshness."""
import json

from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from status_service.model import Health, Integration, ProbeSpec, State, Window
from status_service.report import TenantReport, build_report, encode, expire, percentage

NOW = 1_800_000_000.0
SPEC = ProbeSpec(url="http://127.0.0.1/", interval_s=30, stale_after_s=90)
SEED = {
    "status": "ok",
    "data": {
        "integrations": [
            {"id": "1", "status": "healthy", "type": "MJ"},
            {"id": "2", "status": "healthy", "type": "DALL-E"},
        ],
        "healthy_integrations_count": 2,
        "total_integrations_count": 2,
        "healthy_percentage": 100.0,
        "stats_by_integration_type": {
            "MJ": {"total_count": 1, "healthy_count": 1, "healthy_percentage": 100.0, "status": "ok"},
            "DALL-E": {"total_count": 1, "healthy_count": 1, "healthy_percentage": 100.0, "status": "ok"},
        },
    },
}


def integrations(*types: str) -> list[Integration]:
    return [Integration("t", str(n), kind, SPEC) for n, kind in enumerate(types, start=1)]


def states(*healths: Health | None, at: float = NOW) -> dict[str, State]:
    return {str(n): State(h, checked_at=at) for n, h in enumerate(healths, start=1) if h is not None}


def seed_view(document: dict) -> dict:
    """Project a document onto the seed's keys only (the additive fields removed)."""
    data = document["data"]
    return {
        "status": document["status"],
        "data": {
            "integrations": [{k: row[k] for k in ("id", "status", "type")} for row in data["integrations"]],
            **{k: data[k] for k in SEED["data"] if k != "integrations"},
        },
    }


def test_seed_example_is_reproduced_exactly() -> None:
    document = json.loads(encode(build_report(integrations("MJ", "DALL-E"), states(Health.HEALTHY, Health.HEALTHY), NOW)))
    assert seed_view(document) == SEED
    assert json.dumps(seed_view(document)) == json.dumps(SEED)  # same key order and types too
    assert set(document) == {"status", "data"}
    assert set(document["data"]) - set(SEED["data"]) == {"generated_at"}
    # The announcement's fields, and reason_category, added since (additive: a client that knows only those still works).
    assert set(document["data"]["integrations"][0]) == {"id", "status", "type", "checked_at", "latency_ms", "reason", "reason_category"}


def test_two_of_three_healthy_is_degraded_at_66_67() -> None:
    document = build_report(integrations("MJ", "MJ", "MJ"), states(Health.HEALTHY, Health.HEALTHY, Health.UNHEALTHY), NOW)
    assert document["status"] == "degraded"
    assert document["data"]["healthy_percentage"] == 66.67
    assert document["data"]["healthy_integrations_count"] == 2
    assert document["data"]["total_integrations_count"] == 3


@pytest.mark.parametrize(
    ("healthy", "total", "expected"),
    [(1, 3, 33.33), (2, 3, 66.67), (1, 6, 16.67), (1, 7, 14.29), (0, 5, 0.0), (5, 5, 100.0), (0, 0, 100.0),
     (1, 32, 3.13), (3, 32, 9.38), (1, 160, 0.63), (1, 800, 0.13)],
)
def test_percentages_round_to_two_decimals(healthy: int, total: int, expected: float) -> None:
    assert percentage(healthy, total) == expected
    assert isinstance(percentage(healthy, total), float)


def test_zero_integrations_is_ok_at_100() -> None:
    document = build_report([], {}, NOW)
    assert seed_view(document) == {
        "status": "ok",
        "data": {
            "integrations": [],
            "healthy_integrations_count": 0,
            "total_integrations_count": 0,
            "healthy_percentage": 100.0,
            "stats_by_integration_type": {},
        },
    }


def test_all_unhealthy_is_unhealthy() -> None:
    document = build_report(integrations("MJ", "DALL-E"), states(Health.UNHEALTHY, Health.UNHEALTHY), NOW)
    assert document["status"] == "unhealthy"
    assert document["data"]["healthy_percentage"] == 0.0
    assert {t: s["status"] for t, s in document["data"]["stats_by_integration_type"].items()} == {
        "MJ": "unhealthy",
        "DALL-E": "unhealthy",
    }


def test_per_type_stats_follow_the_same_rule_per_type() -> None:
    document = build_report(
        integrations("MJ", "DALL-E", "MJ", "Runway", "DALL-E"),
        states(Health.HEALTHY, Health.HEALTHY, Health.UNHEALTHY, Health.UNHEALTHY, Health.HEALTHY),
        NOW,
    )
    assert document["data"]["stats_by_integration_type"] == {
        "MJ": {"total_count": 2, "healthy_count": 1, "healthy_percentage": 50.0, "status": "degraded"},
        "DALL-E": {"total_count": 2, "healthy_count": 2, "healthy_percentage": 100.0, "status": "ok"},
        "Runway": {"total_count": 1, "healthy_count": 0, "healthy_percentage": 0.0, "status": "unhealthy"},
    }
    assert document["status"] == "degraded"
    assert document["data"]["healthy_percentage"] == 60.0


def test_never_probed_is_unknown_and_not_healthy() -> None:
    document = build_report(integrations("MJ", "MJ"), states(Health.HEALTHY, None), NOW)
    rows = document["data"]["integrations"]
    assert [r["status"] for r in rows] == ["healthy", "unknown"]
    assert rows[1]["checked_at"] is None and rows[1]["reason"] == "not_checked_yet"
    assert document["status"] == "degraded"
    assert document["data"]["healthy_percentage"] == 50.0


def test_only_unknown_is_unhealthy_overall() -> None:
    assert build_report(integrations("MJ"), {}, NOW)["status"] == "unhealthy"


def test_integrations_keep_registration_order() -> None:
    regs = [Integration("t", iid, "MJ", SPEC) for iid in ("z", "a", "10", "2")]
    document = build_report(regs, {}, NOW)
    assert [r["id"] for r in document["data"]["integrations"]] == ["z", "a", "10", "2"]


def test_result_older_than_stale_after_is_unknown_stale() -> None:
    old = states(Health.HEALTHY, at=NOW - 91)
    document = build_report(integrations("MJ"), old, NOW)
    row = document["data"]["integrations"][0]
    assert (row["status"], row["reason"]) == ("unknown", "stale")
    assert row["checked_at"] == "2027-01-15T07:58:29Z"
    fresh = build_report(integrations("MJ"), states(Health.HEALTHY, at=NOW - 89), NOW)
    assert fresh["data"]["integrations"][0]["status"] == "healthy"


def test_stale_times_are_checked_at_plus_stale_after() -> None:
    kept = TenantReport(integrations("MJ", "MJ", "MJ"))
    kept.apply({"1": State(Health.HEALTHY, NOW - 10), "2": State(Health.HEALTHY, NOW - 50)}, NOW)
    assert kept.stale_at == {"1": NOW + 80, "2": NOW + 40}


def test_expire_ages_results_nobody_refreshed_and_recounts() -> None:
    regs = integrations("MJ", "MJ", "DALL-E")
    built = build_report(regs, states(Health.HEALTHY, Health.HEALTHY, Health.UNHEALTHY), NOW)
    later = expire(built, {"1": NOW + 90, "2": NOW + 10, "3": NOW + 90}, NOW + 60)
    assert [(r["status"], r["reason"]) for r in later["data"]["integrations"]] == [
        ("healthy", None), ("unknown", "stale"), ("unhealthy", None)]
    assert (later["status"], later["data"]["healthy_percentage"]) == ("degraded", 33.33)
    assert later["data"]["stats_by_integration_type"]["MJ"]["status"] == "degraded"
    assert later["data"]["generated_at"] == built["data"]["generated_at"]  # still says how old the data is
    everything = expire(built, {"1": NOW, "2": NOW, "3": NOW}, NOW + 1)
    assert everything["status"] == "unhealthy" and everything["data"]["healthy_integrations_count"] == 0


def test_failure_reason_and_latency_are_reported() -> None:
    st = {"1": State(Health.UNHEALTHY, NOW, reason="http_503", latency_ms=12)}
    row = build_report(integrations("MJ"), st, NOW)["data"]["integrations"][0]
    assert (row["status"], row["reason"], row["latency_ms"]) == ("unhealthy", "http_503", 12)


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_percentage_is_the_exact_share_rounded_half_up(healthy: int, total: int) -> None:
    healthy = min(healthy, total)
    cents = Fraction(100 * 100 * healthy, total)  # the share in hundredths of a percent, exactly
    floor = cents.numerator // cents.denominator
    expected = floor + (1 if cents - floor >= Fraction(1, 2) else 0)
    assert percentage(healthy, total) == expected / 100


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["MJ", "DALL-E", "Runway"]), min_size=0, max_size=8),
    st.lists(
        st.tuples(st.integers(0, 7), st.sampled_from(list(Health)), st.floats(0, 200), st.floats(0, 100)),
        max_size=30,
    ),
)
def test_a_report_kept_result_by_result_equals_one_built_from_scratch(types, updates) -> None:
    integrations = [
        Integration("t", str(n), kind, ProbeSpec(url="u", stale_after_s=30 + 10 * n)) for n, kind in enumerate(types)
    ]
    kept = TenantReport(integrations)
    states: dict[str, State] = {}
    now = 1000.0
    for n, health, age, step in updates:
        now += step
        if integrations:
            state = State(health, checked_at=now - age, latency_ms=int(age), reason=None if health is Health.HEALTHY else "http_503")
            states[integrations[n % len(integrations)].id] = state
            kept.apply({integrations[n % len(integrations)].id: state}, now)
        assert kept.body(now) == encode(build_report(integrations, states, now))
    assert kept.body(now + 500) == encode(build_report(integrations, states, now + 500))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.one_of(st.none(), st.sampled_from(["MJ", "DALL-E", "Runway"])),
                          st.sampled_from(list(Health))), max_size=25))
def test_a_report_kept_through_puts_and_removals_equals_one_built_from_scratch(steps) -> None:
    now = 1000.0
    kept = TenantReport([])
    order: list[Integration] = []
    states: dict[str, State] = {}
    for n, kind, health in steps:
        iid = str(n)
        now += 1
        if kind is None:  # remove it
            order = [i for i in order if i.id != iid]
            states.pop(iid, None)
            kept.remove(iid)
        elif health is Health.UNKNOWN:  # put it: added at the end, or replaced in place, unknown either way
            new = Integration("t", iid, kind, ProbeSpec(url="u"))
            order = [new if i.id == iid else i for i in order] if any(i.id == iid for i in order) else order + [new]
            states.pop(iid, None)
            kept.put(new, now)
        elif any(i.id == iid for i in order):  # a result for it
            states[iid] = State(health, checked_at=now, reason=None if health is Health.HEALTHY else "http_503")
            kept.apply({iid: states[iid]}, now)
        assert kept.body(now) == encode(build_report(order, states, now))


windows_strategy = st.lists(
    st.tuples(st.floats(900, 1400), st.floats(1, 300), st.lists(st.integers(0, 5), max_size=2),
              st.lists(st.sampled_from(["MJ", "DALL-E"]), max_size=1)),
    max_size=3,
).map(lambda found: tuple(Window(f"w{n}", start, start + length, tuple(map(str, ids)), tuple(kinds))
                          for n, (start, length, ids, kinds) in enumerate(found)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["MJ", "DALL-E"]), min_size=1, max_size=6),
    windows_strategy,
    st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans(), st.floats(0, 60), st.one_of(st.none(), windows_strategy)),
             max_size=25),
)
def test_a_report_kept_through_windows_and_flaps_equals_one_built_from_scratch(types, windows, updates) -> None:
    """Windows opening and closing with time, changed on the way, over flapping and steady integrations."""
    integrations = [Integration("t", str(n), kind, ProbeSpec(url="u", stale_after_s=200)) for n, kind in enumerate(types)]
    kept = TenantReport(integrations, windows)
    states: dict[str, State] = {}
    now = 1000.0
    for n, ok, flapping, step, new_windows in updates:
        now += step
        if new_windows is not None:
            windows = new_windows
            kept.set_windows(windows, now)
        iid = integrations[n % len(integrations)].id
        states[iid] = State(Health.HEALTHY if ok else Health.UNHEALTHY, checked_at=now, held="healthy" if flapping else None)
        kept.apply({iid: states[iid]}, now)
        assert kept.body(now) == encode(build_report(integrations, states, now, windows))
    assert kept.body(now + 400) == encode(build_report(integrations, states, now + 400, windows))


def test_a_window_over_a_flapping_integration_moves_no_status() -> None:
    a, b = Integration("t", "a", "MJ", SPEC), Integration("t", "b", "MJ", SPEC)
    kept = TenantReport([a, b])
    kept.apply({"a": State(Health.UNHEALTHY, checked_at=NOW, held="healthy"), "b": State(Health.HEALTHY, checked_at=NOW)}, NOW)
    kept.body(NOW)
    before = kept.statuses()
    kept.set_windows([Window("w", NOW - 1, NOW + 60, ("a",))], NOW)
    kept.body(NOW)
    after = kept.statuses()
    assert before == {"type:MJ": "ok", "": "ok"}
    assert after == {**before, "maintenance:w": "active"}
