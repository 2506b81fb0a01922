"""Health rules: judging a response, and thresholds on state changes."""
import pytest

from hypothesis import given, strategies as st

from status_service.checks import _MISSING, advance, dotted_get, judge, transition
from status_service.model import Health, Outcome, ProbeSpec, State

SPEC = ProbeSpec(url="http://127.0.0.1/", failure_threshold=2, success_threshold=1)
OK, FAIL = Outcome(ok=True), Outcome.failed("timeout")


@pytest.mark.parametrize(
    ("spec", "status", "body", "reason"),
    [
        (SPEC, 200, b"", None),
        (SPEC, 204, b"", None),
        (SPEC, 503, b"", "http_503"),
        (SPEC, 301, b"", "http_301"),
        (ProbeSpec(url="u", expect_status=(200,)), 204, b"", "http_204"),
        (ProbeSpec(url="u", expect_status=(418,)), 418, b"", None),
        (ProbeSpec(url="u", expect_json=(("status.indicator", "none"),)), 200, b'{"status":{"indicator":"none"}}', None),
        (ProbeSpec(url="u", expect_json=(("status.indicator", "none"),)), 200, b'{"status":{"indicator":"major"}}', "unexpected_body"),
        (ProbeSpec(url="u", expect_json=(("status.indicator", "none"),)), 200, b'{"status":{}}', "unexpected_body"),
        (ProbeSpec(url="u", expect_json=(("status.indicator", "none"),)), 200, b"<html>", "invalid_json"),
        (ProbeSpec(url="u", expect_json=(("items.1.ok", True),)), 200, b'{"items":[{"ok":false},{"ok":true}]}', None),
        (ProbeSpec(url="u", expect_json=(("n", 1),)), 200, b'{"n":"1"}', "unexpected_body"),
        (ProbeSpec(url="u", expect_json=(("ok", True),)), 200, b'{"ok":1}', "unexpected_body"),
        (ProbeSpec(url="u", expect_json=(("ok", 1),)), 200, b'{"ok":true}', "unexpected_body"),
        (ProbeSpec(url="u", expect_json=(("ok", False),)), 200, b'{"ok":0}', "unexpected_body"),
        (ProbeSpec(url="u", expect_json=(("ok", True),)), 200, b'{"ok":true}', None),
        (ProbeSpec(url="u", expect_json=(("n", 1),)), 200, b'{"n":1.0}', None),
    ],
)
def test_judge(spec: ProbeSpec, status: int, body: bytes, reason: str | None) -> None:
    outcome = judge(spec, status, body, latency_ms=7)
    assert outcome.ok is (reason is None)
    assert outcome.reason == reason
    assert outcome.latency_ms == 7


def test_dotted_get_missing_paths_are_not_none() -> None:
    assert dotted_get({"a": None}, "a") is None
    assert dotted_get({"a": 1}, "b") is _MISSING
    assert dotted_get([1], "5") is _MISSING


def test_first_result_sets_state_directly() -> None:
    assert advance(None, FAIL, SPEC, 1.0).status is Health.UNHEALTHY
    assert advance(None, OK, SPEC, 1.0).status is Health.HEALTHY


def test_healthy_turns_unhealthy_only_after_failure_threshold() -> None:
    state = advance(None, OK, SPEC, 1.0)
    state = advance(state, FAIL, SPEC, 2.0)
    assert state.status is Health.HEALTHY and state.reason == "timeout" and state.consecutive_failures == 1
    state = advance(state, FAIL, SPEC, 3.0)
    assert state.status is Health.UNHEALTHY and state.checked_at == 3.0


def test_a_success_resets_the_failure_count() -> None:
    state = advance(None, OK, SPEC, 1.0)
    for outcome in (FAIL, OK, FAIL, OK, FAIL):
        state = advance(state, outcome, SPEC, 2.0)
    assert state.status is Health.HEALTHY


def test_unhealthy_recovers_after_success_threshold() -> None:
    spec = ProbeSpec(url="u", failure_threshold=1, success_threshold=3)
    state = advance(None, FAIL, spec, 1.0)
    for _ in range(2):
        state = advance(state, OK, spec, 2.0)
        assert state.status is Health.UNHEALTHY
    state = advance(state, OK, spec, 3.0)
    assert state.status is Health.HEALTHY and state.reason is None


def test_state_round_trips_through_json() -> None:
    state = State(Health.UNHEALTHY, 5.5, "http_503", 12, 3, 0)
    assert State.from_json(state.to_json()) == state


def test_a_previous_state_older_than_stale_after_counts_as_absent() -> None:
    spec = ProbeSpec(url="u", failure_threshold=3, stale_after_s=90)
    week_old = State(Health.HEALTHY, checked_at=0.0, consecutive_successes=40)
    state = advance(week_old, FAIL, spec, 7 * 86400.0)
    assert state.status is Health.UNHEALTHY and state.consecutive_failures == 1
    fresh = State(Health.HEALTHY, checked_at=7 * 86400.0 - 60, consecutive_successes=40)
    assert advance(fresh, FAIL, spec, 7 * 86400.0).status is Health.HEALTHY  # within stale_after: thresholds hold


# -- flapping -----------------------------------------------------------------------------------
FLAP = (5, 1800.0)


def run_flaps(outcomes: list[tuple[float, bool]], spec=None) -> list[tuple[State, dict | None]]:
    """Advance through (time, ok) outcomes with the default flap rule; return each state and its event."""
    spec = spec or ProbeSpec(url="http://x", failure_threshold=1, stale_after_s=10_000.0)
    state, out = None, []
    for at, ok in outcomes:
        after = advance(state, OK if ok else FAIL, spec, at, flap=FLAP)
        out.append((after, transition(state, after)))
        state = after
    return out


def test_five_changes_in_the_window_start_flapping_with_one_event_and_hold_the_rest() -> None:
    steps = run_flaps([(0.0, True)] + [(60.0 * n, n % 2 == 0) for n in range(1, 8)])
    events = [e for _, e in steps]
    assert events[0] == {"previous": "unknown", "current": "healthy"}  # the first result: no change that counts
    assert all(e is not None and not e.get("flapping") and not e.get("held") for e in events[1:5])  # changes 1-4
    assert events[5] == {"previous": "healthy", "current": "unhealthy", "flapping": True}  # the fifth
    assert events[6]["held"] and events[7]["held"]
    assert all(s.held == "healthy" for s, _ in steps[5:])


def test_steady_for_a_window_settles_once_where_it_ended() -> None:
    flaps = [(0.0, True)] + [(60.0 * n, n % 2 == 0) for n in range(1, 6)]  # flapping at 300 s, unhealthy
    steps = run_flaps(flaps + [(600.0, False), (300.0 + 1799.0, False), (300.0 + 1800.0, False), (300.0 + 1830.0, False)])
    events = [e for _, e in steps]
    assert events[6] is None and events[7] is None  # steady, but not for a whole window yet
    assert events[8] == {"previous": "healthy", "current": "unhealthy", "settled": True}
    assert steps[8][0].held is None and events[9] is None  # one event, then quiet


@given(st.lists(st.tuples(st.floats(min_value=1, max_value=900), st.booleans()), max_size=60))
def test_flapping_follows_its_definition(gaps: list[tuple[float, bool]]) -> None:
    """Whatever the sequence: flapping starts only on a change that makes 5 within 30 minutes, ends only after 30 quiet ones."""
    at, outcomes = 0.0, []
    for gap, ok in gaps:
        at += gap
        outcomes.append((at, ok))
    changes: list[float] = []
    previous: State | None = None
    for (t, _), (state, event) in zip(outcomes, run_flaps(outcomes)):
        changed = previous is not None and previous.status is not state.status
        if changed:
            changes.append(t)
        recent = [c for c in changes if t - c < 1800.0]
        was = previous is not None and previous.held is not None
        if not was and state.held is not None:
            assert changed and len(recent) >= 5 and event is not None and event.get("flapping")
        elif was and state.held is None:
            assert not recent and event is not None and event.get("settled") and event["previous"] == previous.held
        elif was and changed:
            assert event is not None and event.get("held")  # no alert while it flaps
        elif changed:
            assert event is not None and not ({"held", "flapping", "settled"} & event.keys())
        assert len(state.changes) <= 5
        previous = state


def test_bounces_inside_a_window_are_no_flapping_and_an_outage_after_it_alerts() -> None:
    spec = ProbeSpec(url="http://x", failure_threshold=1, stale_after_s=10_000.0)
    state = advance(None, OK, spec, 0.0, flap=FLAP)
    for n in range(1, 7):  # six bounces inside a window
        before, state = state, advance(state, OK if n % 2 == 0 else FAIL, spec, 10.0 * n, flap=FLAP, paused=True)
        assert transition(before, state)["maintenance"] is True
    assert state.held is None and state.paused_from == "healthy"
    before, state = state, advance(state, OK, spec, 100.0, flap=FLAP)  # after the window: where it was
    assert transition(before, state) is None
    before, state = state, advance(state, FAIL, spec, 110.0, flap=FLAP)  # a real outage
    assert transition(before, state) == {"previous": "healthy", "current": "unhealthy"}


def test_a_window_over_a_flapping_integration_remembers_what_alerts_said() -> None:
    spec = ProbeSpec(url="http://x", failure_threshold=1, stale_after_s=10_000.0)
    flapping = State(Health.UNHEALTHY, checked_at=0.0, held="healthy", changes=(0.0,))
    paused = advance(flapping, FAIL, spec, 10.0, flap=FLAP, paused=True)
    assert paused.paused_from == "healthy"  # what alerts last said, not where it bounced to
    after = advance(paused, FAIL, spec, 20.0, flap=FLAP)  # after the window, still flapping: its settling will speak
    assert after.held == "healthy" and transition(paused, after) is None
