"""A web worker's memory of keys and reports: kept right by push, bounded in bytes, a bridge over blips."""
import base64
import signal
import socket
import time
import tracemalloc

import pytest
import redis
from hypothesis import given, settings as hsettings, strategies as st

from status_service import create_app, embedded
from status_service.prober import Prober
from status_service.settings import Settings
from status_service.store import Store, StoredReport, connect
from status_service.web.mirror import Mirror
from tests.conftest import TEST_SECRET_KEY, Proxy, integration, key_digest, make_registry, run_round, tenant, wait_for

MB = 1024 * 1024


_opened = []  # apps whose follower threads stop when their test ends


def memory_app(redis_url: str, prefix: str, **extra):
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=8 * MB, **extra))
    _opened.append(app.extensions["status_web"])
    return app, app.extensions["status_web"]


@pytest.fixture(autouse=True)
def close_memory_apps():
    yield
    while _opened:
        _opened.pop().close()


def status_of(client, key: str = "k1"):
    return client.get("/status", headers={"Authorization": f"Bearer {key}"})


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


@pytest.fixture
def acme(upstream, make_prober):
    """A seeded tenant `acme` (key k1) with one healthy integration, and its prober."""
    reg = make_registry([tenant("acme", ["k1"], [integration("1", "MJ", upstream.url("/p"), failure_threshold=1)])])
    prober = make_prober(reg)
    run_round(prober)
    return prober


def test_a_polled_report_costs_no_redis_round_trip(redis_url, prefix, store, acme) -> None:
    app, web = memory_app(redis_url, prefix)
    client = app.test_client()
    assert status_of(client).status_code == 200
    wait_for(lambda: web.mirror.live)
    assert status_of(client).status_code == 200  # read once more, now that the subscription holds
    before = commands(store.client)
    for _ in range(200):
        assert status_of(client).status_code == 200
    # INFO itself and the follower's pings are all that Redis sees.
    assert commands(store.client) - before < 10


def test_a_new_report_is_served_as_soon_as_it_is_written(redis_url, prefix, upstream, acme) -> None:
    app, web = memory_app(redis_url, prefix)
    client = app.test_client()
    status_of(client)
    wait_for(lambda: web.mirror.live)
    status_of(client)
    upstream.routes["/p"].status = 503
    acme.store.client.zadd(acme.store.due_key(), {acme.registry.integrations[0].member: 0})  # due now
    run_round(acme)
    started = time.monotonic()
    wait_for(lambda: status_of(client).get_json()["status"] == "unhealthy", timeout_s=1, interval_s=0.01)
    assert time.monotonic() - started < 1


def test_a_revoked_key_stops_working_within_a_second(redis_url, prefix, upstream, acme) -> None:
    app, web = memory_app(redis_url, prefix)
    client = app.test_client()
    assert status_of(client).status_code == 200
    wait_for(lambda: web.mirror.live)
    assert status_of(client).status_code == 200
    acme.use(make_registry([tenant("acme", ["k2"], [integration("1", "MJ", upstream.url("/p"))])]))
    acme.ensure_seeded(time.time())
    started = time.monotonic()
    wait_for(lambda: status_of(client).status_code == 401, timeout_s=1, interval_s=0.01)
    assert time.monotonic() - started < 1
    assert status_of(client, "k2").status_code == 200


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own, which it may stop, reconfigure or lock down."""
    server = embedded.start(tmp_path / "redis")
    yield server, f"unix://{embedded.socket_path(tmp_path / 'redis')}"
    if server.poll() is None:
        server.terminate()
        server.wait(10)


def test_without_the_push_channel_every_request_reads_redis(private_redis, upstream) -> None:
    _, url = private_redis
    admin = connect(url)
    # A Redis that refuses pub/sub to the web tier: memory can never be trusted, so it is not used.
    admin.execute_command("ACL", "SETUSER", "web", "on", ">web-pass", "~*", "+@all", "-subscribe", "-psubscribe")
    web_url = url.replace("unix://", "unix://web:web-pass@")
    reg = make_registry([tenant("acme", ["k1"], [integration("1", "MJ", upstream.url("/p"))])])
    prober = Prober(reg, Store(admin, "p:"))
    try:
        run_round(prober)
        app, web = memory_app(web_url, "p:")
        client = app.test_client()
        assert status_of(client).status_code == 200
        time.sleep(0.3)  # time enough for a subscription, had it been allowed
        assert not web.mirror.live
        before = commands(admin)
        for _ in range(20):
            assert status_of(client).status_code == 200
        assert commands(admin) - before >= 20
        prober.use(make_registry([tenant("acme", ["k2"], [integration("1", "MJ", upstream.url("/p"))])]))
        prober.ensure_seeded(time.time())
        assert status_of(client).status_code == 401  # at once: nothing stale was served from memory
    finally:
        prober.stop(timeout_s=0)


def test_a_redis_blip_is_bridged_from_memory_and_results_still_age(private_redis, upstream) -> None:
    server, url = private_redis
    reg = make_registry(
        [tenant("acme", ["k1"], [integration("1", "MJ", upstream.url("/p"))])],
        probe={"interval_seconds": 1, "timeout_seconds": 0.5, "stale_after_seconds": 2},
    )
    prober = Prober(reg, Store(connect(url), "p:"))
    run_round(prober)
    prober.stop(timeout_s=0)
    app, web = memory_app(url, "p:", redis_timeout_s=0.2)
    client = app.test_client()
    wait_for(lambda: status_of(client).status_code == 200 and web.mirror.live)
    assert status_of(client).get_json()["status"] == "ok"  # remembered under the subscription
    server.terminate()
    server.wait(10)
    gone = time.monotonic()
    response = status_of(client)
    assert response.status_code == 200 and response.get_json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    wait_for(lambda: status_of(client).get_json()["data"]["integrations"][0]["reason"] == "stale", timeout_s=5)
    document = status_of(client).get_json()
    assert document["status"] == "unhealthy" and document["data"]["integrations"][0]["status"] == "unknown"
    time.sleep(max(0.0, 10.5 - (time.monotonic() - gone)))
    response = status_of(client)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.get_json()["error"]["code"] == "unavailable"
    assert client.get("/readyz").status_code == 503


def test_junk_passwords_do_not_grow_a_worker(redis_url, prefix, acme) -> None:
    app, web = memory_app(redis_url, prefix)
    client = app.test_client()

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"k1:{password}".encode()).decode()}

    for n in range(300):  # warm up: imports, pools, the subscription
        assert client.get("/status", headers=basic(f"warm{n}")).status_code == 200
    held = web.mirror.bytes
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3000):
            assert client.get("/status", headers=basic(f"junk{n}")).status_code == 200
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert web.mirror.bytes == held and len(web.mirror._owners) == 1
    assert grown < 1 * MB, grown  # was about 45 KB a request with a copy per credential


def report(tenant_id: str, version: int, size: int = 100) -> StoredReport:
    return StoredReport(tenant_id, b"x" * size, float("inf"), version, b"{}")


def test_memory_keeps_only_what_fits_evicting_the_least_recently_used() -> None:
    mirror = Mirror(max_bytes=1000)
    mirror.changed(None)
    for n in range(30):
        mirror.remember(mirror.epoch, f"d{n}", report(f"t{n}", 1, size=98))
    assert mirror.bytes <= 1000
    assert mirror.find(["d29"]) is not None and mirror.find(["d0"]) is None


def test_subscribing_again_forgets_everything_held() -> None:
    mirror = Mirror(max_bytes=10_000)
    mirror.changed(None)
    mirror.remember(mirror.epoch, "d", report("acme", 1))
    mirror.went_down()
    assert not mirror.live and mirror.find(["d"]) is not None  # kept for a blip, not trusted alone
    mirror.changed(None)  # subscribed again: anything may have changed meanwhile
    assert mirror.live and mirror.find(["d"]) is None and mirror.bytes == 0


def test_a_read_overtaken_by_a_change_is_not_remembered() -> None:
    mirror = Mirror(max_bytes=10_000)
    mirror.changed(None)
    epoch = mirror.epoch
    mirror.changed("r acme 5")  # a new report was written while the old one was being read
    mirror.remember(epoch, "d", report("acme", 4))
    assert mirror.find(["d"]) is None
    epoch = mirror.epoch
    mirror.changed("k")  # keys changed while a lookup was under way
    mirror.remember(epoch, "d", report("acme", 6))
    assert mirror.find(["d"]) is None
    mirror.remember(mirror.epoch, "d", report("acme", 6))
    assert mirror.find(["d"]).version == 6


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["remember", "change", "keys", "age"]), st.integers(0, 5), st.integers(0, 9), st.integers(0, 990))))
def test_memory_never_exceeds_its_bound_nor_serves_below_a_floor(operations) -> None:
    mirror = Mirror(max_bytes=1000)
    mirror.changed(None)
    for op, t, version, size in operations:
        if op == "remember":
            mirror.remember(mirror.epoch, f"d{t}", report(f"t{t}", version, size))
        elif op == "age":  # an aged copy, of another length, of whatever version is held
            held = mirror._reports.get(f"t{t}")
            mirror.replace(report(f"t{t}", held.version if held else version, size))
        elif op == "change":
            mirror.changed(f"r t{t} {version}")
        else:
            mirror.changed("k")
        assert 0 <= mirror.bytes <= 1000
        assert mirror.bytes == sum(len(r.body) + len(r.stale) for r in mirror._reports.values())
        for tenant_id, found in mirror._reports.items():
            assert found.version >= mirror._floors.get(tenant_id, 0)


def test_a_silently_dead_push_link_is_noticed_and_memory_forgotten(private_redis, upstream) -> None:
    _, url = private_redis
    path = url.removeprefix("unix://")

    def to_redis() -> socket.socket:
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(path)
        return conn

    proxy = Proxy(to_redis)
    reg = make_registry([tenant("acme", ["k1"], [integration("1", "MJ", upstream.url("/p"))])])
    prober = Prober(reg, Store(connect(url), "p:"))
    try:
        run_round(prober)
        app, web = memory_app(f"redis://127.0.0.1:{proxy.port}/0", "p:", redis_timeout_s=0.3)
        client = app.test_client()
        wait_for(lambda: status_of(client).status_code == 200 and web.mirror.live)
        assert status_of(client).status_code == 200
        proxy.dropping = True  # a partition: no error, no close, just silence
        started = time.monotonic()
        wait_for(lambda: not web.mirror.live, timeout_s=6, interval_s=0.05)
        assert time.monotonic() - started < 5  # a ping unanswered for 3 s
        assert status_of(client).status_code == 200  # meanwhile a blip, bridged from memory
        prober.use(make_registry([tenant("acme", ["k2"], [integration("1", "MJ", upstream.url("/p"))])]))
        prober.ensure_seeded(time.time())  # k1 revoked while this worker could not hear of it
        proxy.dropping = False
        wait_for(lambda: status_of(client).status_code == 401, timeout_s=10, interval_s=0.1)
        assert status_of(client, "k2").status_code == 200
    finally:
        prober.stop(timeout_s=0)
        proxy.close()


def test_a_hung_redis_costs_one_slow_request_a_second_and_every_node_stays_ready(private_redis, upstream) -> None:
    server, url = private_redis
    reg = make_registry([tenant("acme", ["k1"], [integration("1", "MJ", upstream.url("/p"))])])
    prober = Prober(reg, Store(connect(url), "p:"))
    run_round(prober)
    prober.stop(timeout_s=0)
    app, web = memory_app(url, "p:", redis_timeout_s=0.3)
    client = app.test_client()
    wait_for(lambda: status_of(client).status_code == 200 and web.mirror.live)
    assert status_of(client).status_code == 200  # remembered
    bare = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=url, key_prefix="p:", redis_timeout_s=0.3, web_memory_bytes=0)).test_client()
    assert bare.get("/readyz").status_code == 200  # memory off, and only ever asked about readiness
    server.send_signal(signal.SIGSTOP)  # hung, not refused: every call waits out its timeout
    try:
        took = []
        stop_at = time.monotonic() + 6
        while time.monotonic() < stop_at:
            started = time.monotonic()
            assert status_of(client).status_code == 200
            assert client.get("/readyz").status_code == 200
            assert bare.get("/readyz").status_code == 200  # a blip takes no node out of the load balancer
            took.append(time.monotonic() - started)
            time.sleep(0.05)
        slow = [t for t in took if t > 0.25]
        assert len(took) > 20 and len(slow) <= 8, (len(took), slow)  # about one try of Redis a second
    finally:
        server.send_signal(signal.SIGCONT)


def test_a_key_change_whose_message_was_lost_still_takes_effect_within_a_second(redis_url, prefix, store, acme) -> None:
    app, web = memory_app(redis_url, prefix)
    client = app.test_client()
    wait_for(lambda: status_of(client).status_code == 200 and web.mirror.live)
    assert status_of(client).status_code == 200
    time.sleep(1.2)  # a ping or two: the worker knows the registry's generation
    # The registry changes as the seed script would change it, but its message never arrives.
    store.client.hdel(store.keys_key(), key_digest("k1"))
    store.client.incr(store.generation_key())
    started = time.monotonic()
    wait_for(lambda: status_of(client).status_code == 401, timeout_s=3, interval_s=0.02)
    assert time.monotonic() - started < 1.5
