"""The prober against real local upstreams and a real Redis: reasons, thresholds, deadlines, recovery."""
import json
import logging
import threading
import time

import pytest

from status_service import create_app, embedded
from status_service.prober import Prober
from status_service.settings import Settings
from status_service.store import Store, connect
from tests.conftest import TEST_SECRET_KEY, free_port, integration, make_registry, report_of, run_round, tenant, wait_for

KEY = "acme-key"


class Clock:
    """A clock the test moves by hand, so schedules can be crossed without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def statuses(store: Store, tenant_id: str = "acme") -> dict[str, tuple[str, str | None]]:
    found = report_of(store, tenant_id)
    assert found is not None
    rows = found["data"]["integrations"]
    return {r["id"]: (r["status"], r["reason"]) for r in rows}


def one_tenant(*integrations, **probe):
    return make_registry([tenant("acme", [KEY], list(integrations))], probe=probe or None)


@pytest.mark.parametrize(
    ("route", "probe", "reason"),
    [
        ({"status": 503}, {}, "http_503"),
        ({"status": 404}, {}, "http_404"),
        ({"status": 200}, {"expect_status": [201]}, "http_200"),
        ({"body": b'{"status": {"indicator": "major"}}'}, {"expect_json": {"status.indicator": "none"}}, "unexpected_body"),
        ({"body": b"<html>ok</html>"}, {"expect_json": {"status.indicator": "none"}}, "invalid_json"),
        ({"delay_s": 1.5}, {"timeout_seconds": 0.3}, "timeout"),
        ({"body": b"x" * 5000}, {"max_body_bytes": 1000}, "body_too_large"),
        ({"body": b"{}"}, {}, None),
    ],
)
def test_each_failure_has_a_short_reason(store, upstream, make_prober, route, probe, reason) -> None:
    reg = one_tenant(integration("1", "MJ", upstream.url("/p", **route), **probe))
    run_round(make_prober(reg))
    assert statuses(store)["1"] == ("unhealthy", reason) if reason else ("healthy", None)


def test_closed_port_is_connection_error(store, make_prober) -> None:
    reg = one_tenant(integration("1", "MJ", f"http://127.0.0.1:{free_port()}/health"))
    run_round(make_prober(reg))
    assert statuses(store)["1"] == ("unhealthy", "connection_error")


def test_tls_to_a_plain_http_server_is_tls_error(store, upstream, make_prober) -> None:
    reg = one_tenant(integration("1", "MJ", upstream.url("/p").replace("http://", "https://")))
    run_round(make_prober(reg))
    assert statuses(store)["1"] == ("unhealthy", "tls_error")


def test_a_dripping_body_is_cut_off_at_the_deadline(store, upstream, make_prober) -> None:
    reg = one_tenant(integration("1", "MJ", upstream.url("/drip", body=b"x" * 200, drip_s=0.05), timeout_seconds=0.5))
    prober = make_prober(reg)
    started = time.monotonic()
    run_round(prober)
    assert time.monotonic() - started < 1.5  # the whole body would take 10 s
    assert statuses(store)["1"] == ("unhealthy", "timeout")


def test_a_hanging_upstream_does_not_delay_the_others(store, upstream, make_prober) -> None:
    reg = one_tenant(
        integration("hang", "MJ", upstream.url("/hang", delay_s=3), timeout_seconds=2),
        *[integration(str(n), "DALL-E", upstream.url(f"/fast{n}")) for n in range(5)],
    )
    prober = make_prober(reg)
    started = time.monotonic()
    prober.tick()

    def fast_ones_recorded():
        prober.tick()
        found = report_of(store, "acme")
        return found and all(s[0] == "healthy" for iid, s in statuses(store).items() if iid != "hang")

    wait_for(fast_ones_recorded, timeout_s=5, interval_s=0.05)
    assert time.monotonic() - started < 1.0
    assert statuses(store)["hang"] == ("unknown", "not_checked_yet")
    prober.drain()
    assert statuses(store)["hang"] == ("unhealthy", "timeout")


def test_thresholds_apply_to_state_changes(store, upstream, make_prober) -> None:
    clock = Clock()
    url = upstream.url("/flaky")
    reg = one_tenant(integration("1", "MJ", url), interval_seconds=10, failure_threshold=2, success_threshold=2)
    prober = make_prober(reg, clock=clock)

    def probe_again(status: int) -> tuple[str, str | None]:
        upstream.url("/flaky", status=status)
        clock.now += 11
        run_round(prober)
        return statuses(store)["1"]

    run_round(prober)
    assert statuses(store)["1"] == ("healthy", None)  # the first result decides alone
    assert probe_again(500) == ("healthy", "http_500")  # one failure is not enough
    assert probe_again(500) == ("unhealthy", "http_500")
    assert probe_again(200) == ("unhealthy", None)  # one success is not enough either
    assert probe_again(200) == ("healthy", None)
    assert upstream.count("/flaky") == 5


def test_never_probed_is_probed_at_once_then_spread(store, upstream, make_prober) -> None:
    clock = Clock()
    reg = one_tenant(*[integration(str(n), "MJ", upstream.url(f"/s{n}")) for n in range(40)], interval_seconds=100)
    prober = make_prober(reg, clock=clock)
    run_round(prober)
    assert all(s == ("healthy", None) for s in statuses(store).values())
    due = [score / 1000 - clock.now for _, score in store.client.zrange(store.due_key(), 0, -1, withscores=True)]
    assert all(0 < d <= 100 for d in due)
    assert max(due) - min(due) > 30  # spread over the interval, not all in one second
    run_round(prober)  # nothing is due again yet
    assert sum(upstream.count(f"/s{n}") for n in range(40)) == 40


def test_an_integration_is_probed_again_after_its_interval(store, upstream, make_prober) -> None:
    clock = Clock()
    reg = one_tenant(integration("1", "MJ", upstream.url("/p")), interval_seconds=30)
    prober = make_prober(reg, clock=clock)
    for expected in (1, 2, 3):
        run_round(prober)
        assert upstream.count("/p") == expected
        clock.now += 31


def test_two_probers_on_one_redis_never_probe_twice(store, upstream, make_prober) -> None:
    reg = one_tenant(*[integration(str(n), "MJ", upstream.url(f"/d{n}", delay_s=0.05)) for n in range(30)])
    probers = [make_prober(reg), make_prober(reg)]
    start = threading.Barrier(2)

    def race(prober) -> None:
        start.wait()
        for _ in range(3):
            prober.tick()

    threads = [threading.Thread(target=race, args=(p,)) for p in probers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for prober in probers:
        prober.drain()
    assert [upstream.count(f"/d{n}") for n in range(30)] == [1] * 30


def test_no_secret_reaches_a_reason_a_log_or_redis(store, upstream, make_prober, caplog) -> None:
    secret = "sk-very-secret-token"
    reg = one_tenant(
        integration("1", "MJ", upstream.url("/auth", status=401), headers={"Authorization": f"Bearer {secret}"}),
        integration("2", "MJ", f"http://127.0.0.1:{free_port()}/x", headers={"X-Api-Key": secret}),
    )
    caplog.set_level(logging.DEBUG)
    run_round(make_prober(reg))
    assert upstream.headers["/auth"]["Authorization"] == f"Bearer {secret}"  # it was sent
    assert secret not in caplog.text
    for key in store.client.scan_iter(f"{store.prefix}*"):
        kind = store.client.type(key)
        dump = {b"hash": store.client.hgetall, b"string": store.client.get}.get(kind, lambda k: b"")(key)
        assert secret.encode() not in json.dumps(str(dump)).encode()


def test_redis_restarted_empty_gives_503_then_recovers(tmp_path, upstream) -> None:
    directory = tmp_path / "private-redis"
    server = embedded.start(directory)
    url = f"unix://{embedded.socket_path(directory)}"
    settings = Settings(secret_keys=TEST_SECRET_KEY, redis_url=url, redis_timeout_s=0.3, web_memory_bytes=0)
    store = Store(connect(url, 0.3))
    client = create_app(settings).test_client()
    auth = {"Authorization": f"Bearer {KEY}"}
    prober = Prober(one_tenant(integration("1", "MJ", upstream.url("/p"))), store)
    try:
        run_round(prober)
        assert client.get("/status", headers=auth).status_code == 200

        server.terminate()
        server.wait(10)
        down = client.get("/status", headers=auth)
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert down.get_json()["error"]["code"] == "unavailable"
        prober.tick()  # fails, backs off, and does not raise
        assert prober.backoff_s > 0

        server = embedded.start(directory)  # back, and empty
        assert client.get("/status", headers=auth).status_code == 503  # not yet re-seeded
        prober.resume_at = 0  # skip the rest of the back-off rather than sleep through it
        run_round(prober)
        # The web worker tries Redis again a second after its last failure, not on every request.
        recovered = wait_for(lambda: (r := client.get("/status", headers=auth)).status_code == 200 and r, timeout_s=3)
        assert recovered.get_json()["data"]["integrations"][0]["status"] == "healthy"
        assert prober.backoff_s == 0
    finally:
        prober.stop(timeout_s=0)
        server.terminate()
        server.wait(10)


def test_results_survive_a_prober_restart(store, upstream, make_prober) -> None:
    clock = Clock()
    reg = one_tenant(integration("1", "MJ", upstream.url("/p", status=500)), failure_threshold=3)
    run_round(make_prober(reg, clock=clock))
    upstream.url("/p", status=200)
    second = make_prober(reg, clock=clock)
    clock.now += 31
    run_round(second)
    # The new prober continued from the stored state: one success is enough to recover.
    assert statuses(store)["1"] == ("healthy", None)
    assert upstream.count("/p") == 2


def test_a_probe_stuck_past_the_watchdog_does_not_fail_the_next_one(store, upstream, make_prober) -> None:
    # One worker; the first claimed (ids sort "a" < "b") drips its headers far past its deadline.
    reg = make_registry(
        [tenant("acme", [KEY], [
            integration("a-stuck", "MJ", upstream.url("/stuck", header_drip_s=0.05), timeout_seconds=0.2),
            integration("b-good", "MJ", upstream.url("/good")),
        ])],
        prober={"concurrency": 1},
    )
    prober = make_prober(reg)

    def both_recorded() -> bool:
        prober.tick()
        found = report_of(store, "acme")
        return bool(found) and all(s[0] != "unknown" for s in statuses(store).values())

    wait_for(both_recorded, timeout_s=15, interval_s=0.1)
    assert statuses(store) == {"a-stuck": ("unhealthy", "timeout"), "b-good": ("healthy", None)}
    assert upstream.count("/good") == 1  # it was really probed, not given up on in a queue
