"""Pure health rules: a probe's response facts to an outcome, and outcomes to a state."""
from __future__ import annotations

import json
from typing import Any, Mapping

from .model import Health, Outcome, ProbeSpec, State
from .providers import PROVIDERS

_MISSING = object()


def judge(spec: ProbeSpec, status_code: int, body: bytes, latency_ms: int, headers: Mapping[str, str] | None = None) -> Outcome:
    """Decide whether a complete HTTP response means the integration is healthy (a provider check: as its provider says)."""
    if spec.provider:
        return PROVIDERS[spec.provider].judge(status_code, headers or {}, body, latency_ms)
    if spec.expect_status:
        if status_code not in spec.expect_status:
            return Outcome.failed(f"http_{status_code}", latency_ms)
    elif not 200 <= status_code < 300:
        return Outcome.failed(f"http_{status_code}", latency_ms)
    if spec.expect_json:
        try:
            document = json.loads(body)
        except ValueError:
            return Outcome.failed("invalid_json", latency_ms)
        for path, expected in spec.expect_json:
            if not same_value(dotted_get(document, path), expected):
                return Outcome.failed("unexpected_body", latency_ms)
    return Outcome(ok=True, latency_ms=latency_ms)


def dotted_get(document: Any, path: str) -> Any:
    """Return the value at a dotted path (list indexes allowed), or a sentinel when absent."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def same_value(actual: Any, expected: Any) -> bool:
    """Compare JSON values as JSON does: true is not 1, though 1 and 1.0 are the same number."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return actual == expected  # expected is a scalar (the schema says so), so no bool hides in a list


def advance(previous: State | None, outcome: Outcome, spec: ProbeSpec, now: float, fence: int = 0,
            flap: tuple[int, float] = (5, 1800.0), paused: bool = False) -> State:
    """Apply one outcome (from the claim with token `fence`) to the previous state, honouring the thresholds.

    A previous state older than stale_after is no evidence of the present: it counts as absent, so
    the first fresh result decides alone. `flap` is (changes, window in s): that many changes within
    the window and the integration is flapping until it has changed none for a whole window.
    `paused`: the probe ran inside a maintenance window, whose start the state remembers.
    """
    checked_at = max(now, previous.checked_at) if previous else now  # never backwards, whatever the clocks
    last = previous  # what was recorded, stale or not: a gap in checks is no change of status
    if previous is not None and now - previous.checked_at > spec.stale_after(previous.reason, previous.wait_s):
        previous = None
    if outcome.ok:
        fails, oks = 0, (previous.consecutive_successes if previous else 0) + 1
    else:
        fails, oks = (previous.consecutive_failures if previous else 0) + 1, 0

    if previous is None:
        status = Health.HEALTHY if outcome.ok else Health.UNHEALTHY  # the first result decides alone
    elif previous.status is Health.HEALTHY and fails >= spec.failure_threshold:
        status = Health.UNHEALTHY
    elif previous.status is Health.UNHEALTHY and oks >= spec.success_threshold:
        status = Health.HEALTHY
    else:
        status = previous.status

    # Flapping: the times of recent changes, and while flapping the status alerts last announced.
    changes_k, window_s = flap
    # A change inside a maintenance window is no evidence of flapping: it counts for nothing here.
    changed = last is not None and last.status is not status and not paused
    # The last changes_k are all it takes to tell: changes_k of them within the window, or none in it.
    recent = (tuple(t for t in (last.changes if last else ()) if checked_at - t < window_s) + ((checked_at,) if changed else ()))[-changes_k:]
    held = last.held if last else None
    if held is None and changed and len(recent) >= changes_k:
        held = last.status.value  # type: ignore[union-attr]  # changed implies a last state
    elif held is not None and not recent:
        held = None  # steady for a whole window: settled
    paused_from = None
    if paused:
        # What alerts last said: its status, or while it flapped, where it was before.
        paused_from = (last.paused_from or last.held or last.status.value) if last is not None else Health.UNKNOWN.value
    return State(
        status=status,
        checked_at=checked_at,
        reason=outcome.reason,
        latency_ms=outcome.latency_ms,
        consecutive_failures=fails,
        consecutive_successes=oks,
        fence=fence,
        since=last.since if last is not None and last.status is status and last.since is not None else checked_at,
        changes=recent,
        held=held,
        paused_from=paused_from,
        balance=outcome.balance,
        wait_s=outcome.retry_after_s or 0.0,
    )


def transition(before: State | None, after: State) -> dict[str, Any] | None:
    """Return the event one recorded state makes (previous, current and what alerts make of it), or None.

    A change while flapping is held (`held`: no alert); the change that starts flapping says so
    (`flapping`); the probe that finds it steady again says where it settled (`settled`), changed or not.
    A change inside a maintenance window is no alert (`maintenance`) and no evidence of flapping; the
    first probe after it says where it is (`resumed`) if that is not what alerts last said, unless it
    still flaps (then its settling will).
    """
    previous = before.status.value if before else "unknown"  # a gap in checks (stale) is no change
    if after.paused_from is not None:  # inside a maintenance window: history only
        return {"previous": previous, "current": after.status.value, "maintenance": True} if previous != after.status.value else None
    if before is not None and before.paused_from is not None:  # the first probe after a window
        if after.held is None and before.paused_from != after.status.value:  # where it is, against what alerts last said
            return {"previous": before.paused_from, "current": after.status.value, "resumed": True}
        # Back where it was; or still flapping, so its settling will say where it is.
        mark = "held" if after.held is not None else "maintenance"
        return {"previous": previous, "current": after.status.value, mark: True} if previous != after.status.value else None
    was, now = before is not None and before.held is not None, after.held is not None
    if was and not now:
        return {"previous": before.held, "current": after.status.value, "settled": True}  # type: ignore[union-attr]
    if previous == after.status.value:
        return None
    if now and not was:
        return {"previous": previous, "current": after.status.value, "flapping": True}
    return {"previous": previous, "current": after.status.value, **({"held": True} if now else {})}
