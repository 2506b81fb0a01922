"""Results fenced by claim tokens, one clock for leases, and retries that never do anything twice."""
import json
import logging
import threading
import time

from status_service import checks
from status_service.model import Health, Outcome, State
from status_service.prober import REPORT_BYTES_PER_S, InFlight, Prober
from status_service.store import Claim, Store
from tests.conftest import TEST_SECRET_KEY, integration, make_registry, report_of, run_round, tenant

FAIL = Outcome.failed("http_503", 5)


def one_integration(upstream, **probe):
    return make_registry([tenant("acme", ["k"], [integration("1", "MJ", upstream.url("/p"), **probe)])])


def stored(store: Store, iid: str = "1") -> State:
    return State.from_json(json.loads(store.client.hget(store.results_key("acme"), iid)))


def next_fence(store: Store) -> int:
    return int(store.client.get(store.fence_key()) or 0) + 1


def test_a_taken_over_claim_cannot_overwrite_a_newer_result(store, upstream, make_prober) -> None:
    reg = one_integration(upstream)
    prober = make_prober(reg)
    run_round(prober)  # healthy, under some fence
    spec = reg.integrations[0].probe
    old, new = next_fence(store), next_fence(store) + 1
    newer = checks.advance(stored(store), Outcome(ok=True, latency_ms=1), spec, time.time(), new)
    prints = prober.tenant_prints
    assert store.record({"acme": ("", -1, {"1": (stored(store).fence, newer)})}, prints)["acme"].dropped == []
    # The prober whose lease ran out reports last, with the older claim's token.
    late = checks.advance(stored(store), FAIL, spec, time.time(), old)
    result = store.record({"acme": ("", -1, {"1": (stored(store).fence, late)})}, prints)["acme"]
    assert result.dropped == ["1"]
    assert stored(store) == newer


def test_a_retried_record_writes_nothing_twice(store, upstream, make_prober) -> None:
    reg = one_integration(upstream, failure_threshold=5)
    prober = make_prober(reg)
    run_round(prober)
    before = stored(store)
    failed = checks.advance(before, FAIL, reg.integrations[0].probe, time.time(), next_fence(store))
    first = store.record({"acme": ("", -1, {"1": (before.fence, failed)})}, prober.tenant_prints)["acme"]
    again = store.record({"acme": ("", -1, {"1": (before.fence, failed)})}, prober.tenant_prints)["acme"]  # its reply was lost; sent again
    assert again.dropped == ["1"] and again.version == first.version
    assert stored(store).consecutive_failures == 1


def test_a_retried_claim_returns_the_same_claims_and_claims_nothing_more(store, upstream, make_prober) -> None:
    reg = make_registry([tenant("acme", ["k"], [integration(str(n), "MJ", upstream.url("/p")) for n in range(4)])])
    prober = make_prober(reg)
    prober.ensure_seeded(time.time())
    at, first = store.claim(None, 30, 2, request_id="r1")
    again_at, again = store.claim(None, 30, 2, request_id="r1")
    assert (again_at, again) == (at, first) and len(first) == 2
    assert 0 < store.client.pttl(f"{store.prefix}{{sched}}:claim:r1") <= 10_000  # kept only while a retry can come
    assert len({c.fence for c in first}) == 2
    _, rest = store.claim(None, 30, 10)
    assert sorted(c.member for c in first + rest) == sorted(i.member for i in reg.integrations)
    assert min(c.fence for c in rest) > max(c.fence for c in first)
    slow = Store(store.client, store.prefix, timeout_s=30)  # a client that waits 30 s may retry a minute later
    slow.claim(None, 30, 1, request_id="r2")
    assert 60_000 < store.client.pttl(f"{store.prefix}{{sched}}:claim:r2") <= 61_000


def test_two_probers_racing_on_one_integration_lose_no_count(store, upstream, make_prober) -> None:
    reg = one_integration(upstream, failure_threshold=100)
    a, b = make_prober(reg), make_prober(reg)
    run_round(a)
    integ = reg.integrations[0]
    start_version = int(store.client.get(store.version_key("acme")))
    base = next_fence(store)
    rounds = 60
    barrier = threading.Barrier(2)

    def record(prober: Prober, offset: int) -> None:
        for n in range(rounds):
            entry = InFlight(Claim(integ.member, 0, 0, fence=base + 2 * n + offset), integ)
            barrier.wait()
            prober._record([(entry, FAIL, time.time())])

    threads = [threading.Thread(target=record, args=(p, o)) for p, o in ((a, 0), (b, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted = int(store.client.get(store.version_key("acme"))) - start_version
    # Each accepted write adds one failure on top of the one before it: none is overwritten unseen.
    assert stored(store).consecutive_failures == accepted
    assert accepted > rounds  # both probers' writes got in, in many rounds
    assert stored(store).fence == base + 2 * rounds - 1


def test_checked_at_never_goes_backwards() -> None:
    spec = one_spec()
    previous = State(Health.HEALTHY, checked_at=1000.0, consecutive_successes=1, fence=1)
    later_token_earlier_clock = checks.advance(previous, Outcome(ok=True), spec, 990.0, fence=2)
    assert later_token_earlier_clock.checked_at == 1000.0


def one_spec():
    from status_service.model import ProbeSpec

    return ProbeSpec(url="http://127.0.0.1/", failure_threshold=2, stale_after_s=90)


def test_a_week_old_healthy_state_does_not_outvote_a_fresh_failure(store, upstream, make_prober) -> None:
    reg = one_integration(upstream)  # failure_threshold 2
    prober = make_prober(reg)
    prober.ensure_seeded(time.time())
    week_old = State(Health.HEALTHY, checked_at=time.time() - 7 * 86400, consecutive_successes=50, fence=1)
    store.client.hset(store.results_key("acme"), "1", json.dumps(week_old.to_json()))
    upstream.url("/p", status=503)
    run_round(prober)
    assert stored(store).status is Health.UNHEALTHY
    assert report_of(store, "acme")["data"]["integrations"][0]["reason"] == "http_503"


def test_leases_and_due_times_follow_redis_time(store, upstream, make_prober) -> None:
    reg = one_integration(upstream)
    prober = make_prober(reg)  # no clock given: Redis's clock
    run_round(prober)
    seconds, micros = store.client.time()
    assert abs(prober.clock() - (seconds + micros / 1e6)) < 0.5
    due_ms = store.client.zscore(store.due_key(), reg.integrations[0].member)
    assert seconds + 15 - 1 <= due_ms / 1000 <= seconds + 30 + 1  # spread over the second half of 30 s


def test_a_redis_outage_logs_one_line_when_it_starts_and_one_when_it_ends(tmp_path, upstream, caplog) -> None:
    from status_service import create_app, embedded
    from status_service.settings import Settings
    from status_service.store import connect

    directory = tmp_path / "r"
    server = embedded.start(directory)
    url = f"unix://{embedded.socket_path(directory)}"
    prober = Prober(one_integration(upstream), Store(connect(url, 0.2), "p:"))
    client = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=url, key_prefix="p:", redis_timeout_s=0.2, web_memory_bytes=0)).test_client()
    try:
        run_round(prober)
        server.terminate()
        server.wait(10)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(20):
                assert client.get("/status", headers={"Authorization": "Bearer k"}).status_code == 503
                client.get("/readyz")
                prober.resume_at = 0  # retry at once rather than sleep through the back-off
                prober.tick()
            server = embedded.start(directory)
            prober.resume_at = 0
            run_round(prober)
            assert client.get("/status", headers={"Authorization": "Bearer k"}).status_code == 200
        events = [r.getMessage().split(" ")[0] for r in caplog.records if r.getMessage().startswith("redis.")]
        assert sorted(events) == ["redis.recovered", "redis.recovered", "redis.unavailable", "redis.unavailable"]
    finally:
        prober.stop(timeout_s=0)
        server.terminate()
        server.wait(10)


def test_the_watchdog_ignores_a_jump_of_the_wall_clock(store, upstream, make_prober) -> None:
    class Clock:
        now = time.time()

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    reg = one_integration(upstream, timeout_seconds=5)
    upstream.url("/p", delay_s=1.0)
    prober = make_prober(reg, clock=clock)
    prober.tick()  # the probe starts and takes a second
    clock.now += 3600  # the wall clock jumps an hour while it runs
    prober.reap(time.monotonic())
    with prober.lock:
        assert prober.inflight  # not given up as a timeout: deadlines run on the monotonic clock
    prober.drain()
    assert report_of(store, "acme")["data"]["integrations"][0]["status"] == "healthy"


def test_a_large_report_is_rewritten_at_most_at_its_byte_rate(store, upstream, make_prober) -> None:
    reg = make_registry([tenant("big", ["k"], [integration(str(n), "MJ", upstream.url("/p")) for n in range(3000)])])
    prober = make_prober(reg)
    prober.ensure_seeded(time.time())
    size = len(store.client.hget(store.report_key("big"), "body"))
    integ = reg.integrations[0]
    written = []
    for n in range(20):  # twenty results in quick succession
        entry = InFlight(Claim(integ.member, 0, 0, fence=next_fence(store) + n), integ)
        with prober.flushing:
            prober._record([(entry, FAIL if n % 2 else Outcome(ok=True), time.time())])
        written.append(int(store.client.hget(store.report_key("big"), "v")))
    assert size > 300_000
    assert len(set(written)) < 10  # most results waited for the report's next turn
    time.sleep(size / REPORT_BYTES_PER_S + 0.05)
    with prober.flushing:
        prober.write_reports(time.time())  # as the next tick does: the held report's turn has come
    assert int(store.client.hget(store.report_key("big"), "v")) == int(store.client.get(store.version_key("big")))


def test_a_prober_whose_view_predates_a_lost_history_reads_it_whole_again(store, upstream, make_prober) -> None:
    reg = make_registry([tenant("acme", ["k"], [integration(str(n), "MJ", upstream.url("/p"), failure_threshold=1)
                                                for n in range(3)])])
    a, b = make_prober(reg), make_prober(reg)
    run_round(a)
    base = next_fence(store)
    for n in range(4):  # a's view reaches some version
        entry = InFlight(Claim(reg.integrations[0].member, 0, 0, fence=base + n), reg.integrations[0])
        with a.flushing:
            a._record([(entry, Outcome(ok=True), time.time())])
    known = a.views["acme"].version
    # Redis loses the tenant's history; another prober writes a new one past a's version.
    store.client.delete(*(k("acme") for k in (store.results_key, store.version_key, store.changed_key, store.incarnation_key)))
    for n in range(known + 2):
        integ = reg.integrations[1]
        entry = InFlight(Claim(integ.member, 0, 0, fence=base + 10 + n), integ)
        with b.flushing:
            b._record([(entry, FAIL, time.time())])
    assert int(store.client.get(store.version_key("acme"))) > known
    entry = InFlight(Claim(reg.integrations[1].member, 0, 0, fence=base + 100), reg.integrations[1])
    with a.flushing:
        a._record([(entry, Outcome(ok=True), time.time())])
        a.write_reports(time.time(), force=True)
    rows = {r["id"]: r["status"] for r in report_of(store, "acme")["data"]["integrations"]}
    assert rows == {"0": "unknown", "1": "healthy", "2": "unknown"}  # the new history, not a's old one
