"""Webhooks against a real receiver on 127.0.0.1: signatures, payloads, exactly one event per transition, retries, dead letters."""
from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from hypothesis import given, strategies as st

from status_service import create_app, reasons, webhooks
from status_service.cipher import Cipher
from status_service.registry import webhook_id
from status_service.settings import Settings
from status_service.store.history import History
from status_service.store.webhooks import Webhooks
from tests.conftest import REPO, TEST_SECRET_KEY, integration, key_digest, make_registry, report_of, run_round, tenant, wait_for

SECRET = "whsec_for-tests-only-0123456789"
ADMIN = {"Authorization": "Bearer admin-secret"}


@dataclass
class Receiver:
    """A real HTTP server that records each delivery and answers as the test says."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    fail_first: int = 0  # answer 500 to this many deliveries first
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    reply: bytes = b"ok"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[str]:
        with self.lock:
            return [r["body"]["id"] for r in self.received if r["answered"] < 300]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    server = _serve(state)
    yield state
    server.shutdown()
    server.server_close()


def _serve(state: Receiver) -> ThreadingHTTPServer:
    """Serve `state` on 127.0.0.1 from a thread; its url is set."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(state.delay_s)
            with state.lock:
                answer = 500 if state.fail_first > 0 else state.status
                state.fail_first -= 1
                state.received.append({"raw": raw, "body": json.loads(raw), "signature": self.headers.get("Status-Signature"),
                                       "at": time.time(), "answered": answer, "path": self.path})
            self.send_response(answer)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.reply)))
            self.end_headers()
            try:
                self.wfile.write(state.reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the dispatcher stopped reading at its cap

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def hooked_registry(upstream, receiver: Receiver, **extra: Any):
    """acme: one MJ integration (a failure turns it unhealthy at once) and the receiver as its file webhook."""
    document = tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj"), failure_threshold=1)])
    document["webhooks"] = [{"url": receiver.url, "secret": SECRET}]
    return make_registry([document], admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}], **extra)


def flip(prober, upstream, status: int) -> None:
    """Make the upstream answer `status` and have `prober` probe every integration now."""
    upstream.url("/mj", status=status, body=b"{}")
    store = prober.store
    store.client.zadd(store.due_key(), {i.member: 0 for i in prober.registry.integrations})
    run_round(prober)


def deliver_all(*probers, expected: int, timeout_s: float = 15.0, receiver: Receiver) -> None:
    """Run every prober's dispatcher, side by side on threads, until the receiver holds `expected` distinct events."""
    done = threading.Event()

    def loop(prober) -> None:
        while not done.is_set():
            prober.dispatch()
            time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=(p,), daemon=True) for p in probers]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(set(receiver.ids())) >= expected, timeout_s=timeout_s)
        time.sleep(0.5)  # long enough for a duplicate to show, were one sent
    finally:
        done.set()
        for t in threads:
            t.join(5)


def alertable(store, tenant_id: str = "acme") -> list[str]:
    """Return the ids of the feed's events that are alerts."""
    return [e.id for e in History(store).events(tenant_id, None, 1000) if webhooks.event_type(e.body)]


def test_each_transition_reaches_the_receiver_once_signed_with_two_probers(upstream, receiver, make_prober, store) -> None:
    reg = hooked_registry(upstream, receiver)
    first, second = make_prober(reg), make_prober(reg)
    run_round(first)  # unknown -> healthy: no alert
    flip(second, upstream, 500)  # healthy -> unhealthy: the integration, the tenant's status and MJ's
    flip(first, upstream, 200)  # and back
    expected = alertable(store)
    assert len(expected) == 6
    deliver_all(first, second, expected=len(expected), receiver=receiver)
    got = receiver.ids()
    assert sorted(got) == sorted(expected)  # each once: no duplicate even before deduplication
    kinds = {r["body"]["type"] for r in receiver.received}
    assert kinds == {"integration.unhealthy", "integration.healthy", "status.changed", "type.changed"}
    for delivery in receiver.received:
        body = delivery["body"]
        assert verified(SECRET, delivery["signature"], delivery["raw"])
        assert not verified("another-secret-of-16+", delivery["signature"], delivery["raw"])
        assert body["tenant"] == "acme" and body["occurred_at"].endswith("Z")
        assert set(body) >= {"id", "type", "occurred_at", "tenant", "integration", "previous", "current", "reason"}
    unhealthy = next(r["body"] for r in receiver.received if r["body"]["type"] == "integration.unhealthy")
    assert unhealthy["integration"] == {"id": "1", "type": "MJ"}
    assert (unhealthy["previous"], unhealthy["current"], unhealthy["reason"]) == ("healthy", "unhealthy", "http_500")
    status = next(r["body"] for r in receiver.received if r["body"]["type"] == "status.changed" and r["body"]["current"] == "unhealthy")
    assert status["integration"] is None and status["previous"] == "ok"
    assert Webhooks(store).pending(["acme"]) == 0
    assert SECRET not in json.dumps([r["body"] for r in receiver.received])


def test_a_failing_receiver_gets_retries_until_it_recovers(upstream, receiver, make_prober, store) -> None:
    receiver.fail_first = 3
    prober = make_prober(hooked_registry(upstream, receiver, alerts={"first_retry_seconds": 0.3}))
    run_round(prober)
    flip(prober, upstream, 500)
    expected = alertable(store)
    deliver_all(prober, expected=len(expected), receiver=receiver)
    assert sorted(set(receiver.ids())) == sorted(expected)
    first_event = receiver.received[0]["body"]["id"]
    attempts = [r for r in receiver.received if r["body"]["id"] == first_event]
    assert [a["answered"] for a in attempts][-1] == 200 and len(attempts) >= 2
    gaps = [b["at"] - a["at"] for a, b in zip(attempts, attempts[1:])]
    assert all(g >= 0.1 for g in gaps)  # backoff: not retried at once
    for a in attempts:  # every attempt signed afresh, each signature good
        assert verified(SECRET, a["signature"], a["raw"])
    prober.flush_metrics(force=True)
    found = samples_of(store)
    assert found.get('["deliveries","failed"]', 0) >= 3 and found['["deliveries","delivered"]'] == len(expected)


def samples_of(store) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in store.client.hgetall(f"{store.prefix}{{metrics}}:counters").items()}


def test_an_undeliverable_event_is_dead_lettered_and_can_be_replayed(upstream, receiver, make_prober, store, redis_url, prefix) -> None:
    receiver.status = 503
    prober = make_prober(hooked_registry(upstream, receiver, alerts={"first_retry_seconds": 0.2, "retry_hours": 0.001}))
    run_round(prober)
    flip(prober, upstream, 500)
    expected = alertable(store)
    deadline = time.monotonic() + 20
    while len(Webhooks(store).dead("acme")) < len(expected) and time.monotonic() < deadline:
        prober.dispatch()
        time.sleep(0.1)
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    dead = web.get("/admin/tenants/acme/webhooks/dead", headers=ADMIN).get_json()["dead"]
    assert sorted(d["event"] for d in dead) == sorted(expected)
    assert all(d["reason"] == "http_503" and d["attempts"] >= 2 and d["webhook"] == webhook_id(receiver.url) for d in dead)
    assert Webhooks(store).pending(["acme"]) == 0
    receiver.status = 200
    replayed = web.post("/admin/tenants/acme/webhooks/dead/replay", headers=ADMIN).get_json()["replayed"]
    assert sorted(replayed) == sorted(d["id"] for d in dead)
    deliver_all(prober, expected=len(expected), receiver=receiver)
    assert web.get("/admin/tenants/acme/webhooks/dead", headers=ADMIN).get_json()["dead"] == []


def test_redirects_are_not_followed(upstream, receiver, make_prober, store) -> None:
    receiver.status, receiver.headers = 302, {"Location": upstream.url("/elsewhere")}
    prober = make_prober(hooked_registry(upstream, receiver, alerts={"first_retry_seconds": 60}))
    run_round(prober)
    flip(prober, upstream, 500)
    wait_for(lambda: prober.dispatch() is not None and len(receiver.received) >= 3, timeout_s=10)
    time.sleep(0.3)
    assert upstream.count("/elsewhere") == 0
    assert Webhooks(store).pending(["acme"]) == 3  # each waits for its retry


def test_slow_receivers_delay_no_other_with_a_backlog(upstream, receiver, make_prober, store) -> None:
    """Five hung receivers and a backlog of their deliveries: the tenant's sixth webhook gets every event at once."""
    receiver.delay_s = 4.0  # the file's webhook, and the four below, share this slow server
    cipher = Cipher([TEST_SECRET_KEY])
    prober = make_prober(hooked_registry(upstream, receiver, probe={"allow_private_addresses": True}, alerts={"flap_changes": 100}),
                         cipher=cipher)
    fast = Receiver()
    fast_server = _serve(fast)
    try:
        for n in range(4):
            Webhooks(store).add("acme", f"wh_slow{n}", {"url": cipher.seal(receiver.url), "events": [], "secret": cipher.seal(SECRET),
                                                        "created_at": "2026-01-01T00:00:00Z"})
        Webhooks(store).add("acme", "wh_fast", {"url": cipher.seal(fast.url), "events": [], "secret": cipher.seal(SECRET),
                                                "created_at": "2026-01-01T00:00:00Z"})
        run_round(prober)
        for n in range(10):  # 30 alerts each, queued before any delivery starts
            flip(prober, upstream, 500 if n % 2 == 0 else 200)
        expected = alertable(store)
        assert len(expected) == 30
        started = time.monotonic()
        deliver_all(prober, expected=30, receiver=fast, timeout_s=8)
        assert time.monotonic() - started < 3.5  # all 30, while the slow receivers still hold their first ones
        assert sorted(fast.ids()) == sorted(expected)
        assert len(receiver.received) <= 2 * 5  # at most two at once to each slow webhook
    finally:
        fast_server.shutdown()


def test_a_prober_that_cannot_open_a_secret_leaves_the_deliveries_to_one_that_can(upstream, receiver, make_prober, store) -> None:
    cipher, other = Cipher([TEST_SECRET_KEY]), Cipher(["b3RoZXIta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY="])
    reg = hooked_registry(upstream, receiver, probe={"allow_private_addresses": True}, alerts={"first_retry_seconds": 0.3})
    keyless, keyed = make_prober(reg, cipher=other), make_prober(reg, cipher=cipher)
    Webhooks(store).add("acme", "wh_api", {"url": cipher.seal(receiver.url.replace("/hook", "/api")), "events": [],
                                           "secret": cipher.seal(SECRET), "created_at": "2026-01-01T00:00:00Z"})
    run_round(keyless)
    flip(keyless, upstream, 500)
    for _ in range(20):  # the keyless prober fans the events out and fails each delivery to the API's webhook
        keyless.dispatch()
        time.sleep(0.05)
    queued = [json.loads(v) for k, v in store.client.hgetall(store.tenant_base("acme") + "outbox").items() if k.startswith(b"wh_api|")]
    assert len(queued) == 3 and all(q["n"] == 0 for q in queued)  # waiting, untouched: no attempt spent, no retry window used
    wait_for(lambda: keyed.dispatch() is not None and len({r["body"]["id"] for r in receiver.received if r["path"] == "/api"}) == 3,
             timeout_s=10, interval_s=0.1)


def test_webhooks_made_again_get_the_events_from_then_not_a_backlog(web, store, make_prober, upstream, receiver, redis_url, prefix) -> None:
    cipher = Cipher([TEST_SECRET_KEY])
    hooks = Webhooks(store)
    made = web.post("/admin/tenants/api/webhooks", json={"url": "https://hooks.example.com/x"}, headers=ADMIN).get_json()
    store.client.xadd(hooks.key("api", "events"), {"e": '1 {"scope": "status", "previous": "ok", "current": "degraded"}'})
    assert web.delete(f"/admin/tenants/api/webhooks/{made['id']}", headers=ADMIN).status_code == 204
    assert b"api" not in store.client.smembers(hooks.hooked_key())  # its last webhook: no longer looked for
    store.client.xadd(hooks.key("api", "events"), {"e": '2 {"scope": "status", "previous": "degraded", "current": "ok"}'})
    web.post("/admin/tenants/api/webhooks", json={"url": "https://hooks.example.com/y"}, headers=ADMIN)
    store.client.xadd(hooks.key("api", "events"), {"e": '3 {"scope": "status", "previous": "ok", "current": "degraded"}'})
    found = hooks.read(["api"], "a-prober", reclaim=False)["api"]
    assert [text.split(" ")[0] for _, text in found.events] == ["3"]
    del cipher, made


# -- the admin API ------------------------------------------------------------------------------
@pytest.fixture
def web(redis_url, prefix, make_prober, upstream):
    run_round(make_prober(make_registry([tenant("filecorp", ["file-key"], [])],
                                        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])))
    client = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    assert client.post("/admin/tenants", json={"id": "api"}, headers=ADMIN).status_code == 201
    return client


def test_a_webhook_made_through_the_api_shows_its_secret_once(web, store) -> None:
    made = web.post("/admin/tenants/api/webhooks", json={"url": "https://hooks.example.com/x", "events": ["status.changed"]}, headers=ADMIN)
    assert made.status_code == 201, made.get_data(as_text=True)
    hook = made.get_json()
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["status.changed"]
    listed = web.get("/admin/tenants/api/webhooks", headers=ADMIN).get_json()["webhooks"]
    assert listed == [{k: v for k, v in hook.items() if k != "secret"}]
    raw = json.dumps({k.decode(): v.decode() for k, v in store.client.hgetall(store.tenant_base("api") + "webhooks").items()})
    assert hook["secret"] not in raw and "hooks.example.com" not in raw  # sealed at rest, URL too
    given = web.post("/admin/tenants/api/webhooks", json={"url": "https://hooks.example.com/y", "secret": SECRET}, headers=ADMIN)
    assert given.status_code == 201 and "secret" not in given.get_json()
    assert web.delete(f"/admin/tenants/api/webhooks/{hook['id']}", headers=ADMIN).status_code == 204
    assert web.delete(f"/admin/tenants/api/webhooks/{hook['id']}", headers=ADMIN).status_code == 404
    assert len(web.get("/admin/tenants/api/webhooks", headers=ADMIN).get_json()["webhooks"]) == 1


@pytest.mark.parametrize("body, field", [
    ({"url": "http://127.0.0.1:9/x"}, "url"),  # the address policy
    ({"url": "http://169.254.169.254/latest"}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "https://example.com/x", "secret": "short"}, "secret"),
    ({"url": "https://example.com/x", "events": ["integration.exploded"]}, "events"),
    ({"url": "https://example.com/x", "categories": ["weather"]}, "categories"),
    ({}, "url"),
])
def test_bad_webhooks_are_refused_naming_the_field(web, body, field) -> None:
    response = web.post("/admin/tenants/api/webhooks", json=body, headers=ADMIN)
    assert response.status_code == 400
    assert any(name.split(".")[0] == field for name in response.get_json()["fields"]), response.get_json()


def test_webhooks_of_missing_and_file_tenants(web) -> None:
    assert web.post("/admin/tenants/nobody/webhooks", json={"url": "https://example.com/x"}, headers=ADMIN).status_code == 404
    assert web.post("/admin/tenants/filecorp/webhooks", json={"url": "https://example.com/x"}, headers=ADMIN).status_code == 409
    assert web.get("/admin/tenants/filecorp/webhooks/dead", headers=ADMIN).status_code == 200
    assert web.get("/admin/tenants/nobody/webhooks/dead", headers=ADMIN).status_code == 404
    assert web.post("/admin/tenants/api/webhooks", json={"url": "https://example.com/x"}, headers={"Authorization": "Bearer file-key"}).status_code == 403


# -- the pure rules -----------------------------------------------------------------------------
def _readme_check():
    """Return the receiver's check exactly as the README shows it."""
    readme = (REPO / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "def verified(" in block)
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["verified"]


verified = _readme_check()


def test_signature_checks_as_the_readme_shows() -> None:
    body, now = b'{"id":"1-0"}', int(time.time())
    header = webhooks.signature(SECRET, now, body)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verified(SECRET, header, body)
    assert verified(SECRET, webhooks.signature(SECRET, now - 290, body), body)
    assert not verified(SECRET, webhooks.signature(SECRET, now - 310, body), body)  # too old: a replay
    assert not verified(SECRET, header, body + b" ")
    assert not verified(SECRET, "garbage", body)
    assert not verified(SECRET, "t=abc,v1=00", body)


@given(attempts=st.integers(min_value=1, max_value=200), first=st.floats(min_value=0.1, max_value=3600), seed=st.integers())
def test_retries_wait_longer_each_time_within_bounds(attempts: int, first: float, seed: int) -> None:
    delay = webhooks.retry_delay(attempts, first, random.Random(seed))
    base = min(webhooks.MAX_DELAY_S, first * 2 ** (attempts - 1))
    assert base / 2 <= delay <= base
    if attempts == 1:
        assert delay <= first  # the first retry comes within first_retry_seconds


def test_which_events_are_alerts() -> None:
    assert webhooks.event_type({"scope": "integration", "previous": "unknown", "current": "healthy"}) is None
    assert webhooks.event_type({"scope": "integration", "previous": "unknown", "current": "unhealthy"}) == "integration.unhealthy"
    assert webhooks.event_type({"scope": "integration", "previous": "unhealthy", "current": "healthy"}) == "integration.healthy"
    assert webhooks.event_type({"scope": "status", "previous": "ok", "current": "degraded"}) == "status.changed"
    assert webhooks.event_type({"scope": "type", "type": "MJ", "previous": "ok", "current": "degraded"}) == "type.changed"


def test_a_webhook_subscribed_to_categories_gets_only_those_failures_and_every_recovery() -> None:
    down = {"scope": "integration", "previous": "healthy", "current": "unhealthy", "reason": "http_503"}
    assert webhooks.wanted((), ("provider",), "integration.unhealthy", down)
    assert not webhooks.wanted((), ("credentials",), "integration.unhealthy", down)
    assert webhooks.wanted((), ("credentials",), "integration.unhealthy", {**down, "reason": "invalid_credentials"})
    assert webhooks.wanted((), ("credentials",), "integration.healthy", {**down, "current": "healthy", "reason": None})
    assert webhooks.wanted((), ("credentials",), "status.changed", {"scope": "status", "reason": None})
    assert not webhooks.wanted(("status.changed",), (), "integration.unhealthy", down)
    assert not webhooks.wanted((), (), None, down)  # no alert at all
    # A timeout while the provider had trouble was the provider's, as /status said then: the event keeps that.
    during = {**down, "reason": "timeout", "reason_category": "provider"}
    assert webhooks.wanted((), ("provider",), "integration.unhealthy", during)
    assert not webhooks.wanted((), ("network",), "integration.unhealthy", during)
    assert json.loads(webhooks.payload("1-0", "integration.unhealthy", 0.0, "acme", during))["reason_category"] == "provider"
    assert reasons.category_while("timeout", True) == "provider" and reasons.category_while("invalid_credentials", True) == "credentials"
    assert reasons.category_while("timeout", False) == "network" and reasons.category_while(None, True) is None


def test_categories_filter_what_a_receiver_gets_and_each_payload_says_its_category(upstream, receiver, make_prober, store) -> None:
    document = tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj"), failure_threshold=1)])
    document["webhooks"] = [{"url": receiver.url, "secret": SECRET, "events": ["integration.unhealthy", "integration.healthy"],
                             "categories": ["credentials"]}]
    prober = make_prober(make_registry([document]))
    run_round(prober)
    flip(prober, upstream, 503)  # provider: not sent
    flip(prober, upstream, 200)  # a recovery: sent
    flip(prober, upstream, 401)  # credentials: sent
    deliver_all(prober, expected=2, receiver=receiver)
    got = sorted((r["body"]["type"], r["body"]["reason"], r["body"]["reason_category"]) for r in receiver.received)
    assert got == [("integration.healthy", None, None), ("integration.unhealthy", "http_401", "credentials")]


def test_a_flapping_integration_sends_one_flapping_event_then_one_where_it_settled(upstream, receiver, make_prober, store) -> None:
    prober = make_prober(hooked_registry(upstream, receiver, alerts={"flap_changes": 5, "flap_minutes": 0.05}))  # a 3 s window
    run_round(prober)
    for status in (500, 200, 500, 200, 500, 200, 500):  # five changes, then two more while it flaps
        flip(prober, upstream, status)
    row = report_of(store, "acme")["data"]["integrations"][0]
    assert row["flapping"] is True and row["status"] == "unhealthy"
    time.sleep(3.2)  # steady for the whole window
    flip(prober, upstream, 500)
    assert "flapping" not in report_of(store, "acme")["data"]["integrations"][0]
    expected = alertable(store)
    deliver_all(prober, expected=len(expected), receiver=receiver)
    bodies = [r["body"] for r in receiver.received]
    kinds = [b["type"] for b in bodies]
    assert kinds.count("integration.flapping") == 1
    assert len([k for k in kinds if k in ("integration.healthy", "integration.unhealthy")]) == 5  # four changes and the settling
    assert kinds.count("status.changed") == 5  # the tenant's status did not flap with it
    settled = [b for b in bodies if b["type"] == "integration.unhealthy"][-1]
    assert (settled["previous"], settled["current"], settled["flapping"]) == ("healthy", "unhealthy", False)
    held = [e for e in History(store).events("acme", None, 100) if e.body.get("held")]
    assert len(held) == 2  # the feed keeps every change; the alerts skip them


def test_a_deleted_tenant_leaves_no_webhook_or_window_behind(web, store) -> None:
    hook = web.post("/admin/tenants/api/webhooks", json={"url": "https://hooks.example.com/x"}, headers=ADMIN).get_json()
    window = {"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z"}
    assert web.post("/admin/tenants/api/maintenance", json=window, headers=ADMIN).status_code == 201
    outbox = store.tenant_base("api") + "outbox"
    store.client.hset(outbox, f"{hook['id']}|1-0", "{}")  # a delivery still queued
    assert web.delete("/admin/tenants/api", headers=ADMIN).status_code == 204
    assert not store.client.exists(store.tenant_base("api") + "webhooks", outbox)
    assert b"api" not in store.client.smembers(Webhooks(store).hooked_key())
    assert not any(k.startswith(b"api\x1f") for k in store.client.hkeys(f"{store.prefix}{{maint}}:windows"))


def test_a_webhook_of_the_api_is_held_to_the_address_policy_when_it_is_delivered(upstream, receiver, make_prober, store) -> None:
    """A name that pointed elsewhere when it was registered and at 127.0.0.1 now: refused at connect."""
    cipher = Cipher([TEST_SECRET_KEY])
    prober = make_prober(hooked_registry(upstream, receiver, alerts={"first_retry_seconds": 60}), cipher=cipher)
    Webhooks(store).add("acme", "wh_api", {"url": cipher.seal(receiver.url.replace("/hook", "/api")), "events": [],
                                           "secret": cipher.seal(SECRET), "created_at": "2026-01-01T00:00:00Z"})
    run_round(prober)
    flip(prober, upstream, 500)
    deliver_all(prober, expected=3, receiver=receiver)  # the file's webhook is trusted: delivered
    time.sleep(0.5)
    assert not [r for r in receiver.received if r["path"] == "/api"]
    failed = [json.loads(v) for k, v in store.client.hgetall(store.tenant_base("acme") + "outbox").items() if k.startswith(b"wh_api|")]
    assert len(failed) == 3 and all(f["err"] == "address_refused" for f in failed)


def test_a_receiver_that_answers_2xx_with_a_huge_body_has_it_delivered(upstream, receiver, make_prober, store) -> None:
    prober = make_prober(hooked_registry(upstream, receiver))
    big = Receiver()
    server = _serve(big)
    try:
        cipher = Cipher([TEST_SECRET_KEY])
        prober.cipher = cipher
        prober.dispatcher.open_secret = cipher.open
        prober.dispatcher.guarded = False
        Webhooks(store).add("acme", "wh_big", {"url": cipher.seal(big.url), "events": [], "secret": cipher.seal(SECRET),
                                               "created_at": "2026-01-01T00:00:00Z"})
        big.reply = b"x" * (3 * 1024 * 1024)
        run_round(prober)
        flip(prober, upstream, 500)
        deliver_all(prober, expected=3, receiver=big)
        time.sleep(0.3)
        assert Webhooks(store).pending(["acme"]) == 0
    finally:
        server.shutdown()


def test_dead_letters_are_bounded_oldest_first(store, monkeypatch) -> None:
    from status_service.store import webhooks as stored

    monkeypatch.setattr(stored, "MAX_DEAD", 3)
    hooks = Webhooks(store)
    for n in range(5):
        job = f"w|{n}-0"
        store.client.hset(hooks.key("acme", "outbox"), job, json.dumps({"w": "w", "e": f"{n}-0", "n": 0, "first": 0}))
        store.client.zadd(hooks.key("acme", "outbox:w"), {job: 0})
        taken = hooks.take({"acme": {"w": 1}}, 1000.0 + n, 15)[0]
        assert hooks.settle(taken, "dead", taken.state(n=1, err="http_500", dead_at=n), 1000.0 + n)
    assert sorted(hooks.dead("acme")) == ["w|2-0", "w|3-0", "w|4-0"]
    assert hooks.replay("acme", ["w|3-0"], 2000.0) == ["w|3-0"]
    assert sorted(hooks.dead("acme")) == ["w|2-0", "w|4-0"] and store.client.zcard(hooks.key("acme", "dead:at")) == 2


def test_consumers_of_gone_probers_are_forgotten_when_they_hold_nothing(store, monkeypatch) -> None:
    from status_service.store import webhooks as stored

    hooks = Webhooks(store)
    hooks.ensure_groups(["acme"])
    events = hooks.key("acme", "events")
    first = store.client.xadd(events, {"e": '1 {"scope": "status"}'})
    store.client.xreadgroup(stored.GROUP, "idle-prober", {events: ">"})
    store.client.xack(events, stored.GROUP, first)  # it fanned its event out: it holds nothing
    store.client.xadd(events, {"e": '2 {"scope": "status"}'})
    hooks.read(["acme"], "gone-prober", reclaim=False)  # it takes an event and dies holding it
    monkeypatch.setattr(stored, "IDLE_CONSUMER_MS", -1)
    hooks.read(["acme"], "live-prober", reclaim=True)
    names = {c["name"] for c in store.client.xinfo_consumers(events, stored.GROUP)}
    assert names == {b"gone-prober"}  # the one holding an event stays, for its event to be claimed


def test_the_queue_of_a_webhook_the_file_dropped_goes_and_the_apis_stay(upstream, receiver, make_prober, store) -> None:
    prober = make_prober(hooked_registry(upstream, receiver))
    run_round(prober)  # seeded: this file is the one that counts
    hooks = Webhooks(store)
    hooks.fan_out({"acme": [("1-0", ["file-gone", "wh_api"])]}, time.time() + 3600)  # not due: nothing is sent
    sealed = Cipher([TEST_SECRET_KEY]).seal("x" * 16)  # this prober has no key: the job is never taken
    store.client.hset(hooks.key("acme", "webhooks"), "wh_api", json.dumps({"url": sealed, "secret": sealed, "events": []}))
    prober.dispatcher.reclaim_at = 0.0  # a reclaim pass now
    prober.dispatch()
    assert sorted(k.decode() for k in store.client.hkeys(hooks.key("acme", "outbox"))) == ["wh_api|1-0"]
    assert not store.client.exists(hooks.key("acme", "outbox:file-gone"))


def test_a_tenant_without_webhooks_gets_no_group_back(store) -> None:
    hooks = Webhooks(store)
    store.client.xadd(hooks.key("api", "events"), {"e": '1 {"scope": "status"}'})  # events, and no group: its last webhook went
    hooks.read(["api"], "a-prober", reclaim=False)
    assert store.client.xinfo_groups(hooks.key("api", "events")) == []
    hooks.read(["api"], "a-prober", reclaim=False, file_hooked=["api"])  # the file gives it webhooks: the group comes back
    assert len(store.client.xinfo_groups(hooks.key("api", "events"))) == 1


def test_no_webhook_is_made_through_the_api_while_history_is_off(redis_url, prefix, make_prober) -> None:
    reg = make_registry([], admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}], history={"enabled": False})
    run_round(make_prober(reg))
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    assert web.post("/admin/tenants", json={"id": "api"}, headers=ADMIN).status_code == 201
    refused = web.post("/admin/tenants/api/webhooks", json={"url": "https://hooks.example.com/x"}, headers=ADMIN)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "history_off"


def test_a_receiver_that_never_finishes_its_headers_is_cut_off_and_its_url_secret_never_logged(upstream, make_prober, store,
                                                                                               monkeypatch, caplog) -> None:
    """A receiver that accepts, reads the request and then drips one header byte a second: the delivery ends at its
    deadline as a timeout, retried later; the token in its URL's path and query appears in no log line."""
    import logging
    import socket

    from status_service import dispatcher

    monkeypatch.setattr(dispatcher, "DELIVERY_TIMEOUT_S", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def drip() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            conn.recv(65536)
            threading.Thread(target=lambda c=conn: [c.send(b"H") or time.sleep(1) for _ in range(30)], daemon=True).start()

    threading.Thread(target=drip, daemon=True).start()
    token = "tok-sekret-in-path-0123456789"
    receiver = Receiver(url=f"http://127.0.0.1:{listener.getsockname()[1]}/hooks/{token}?key={token}")
    caplog.set_level(logging.DEBUG)
    try:
        prober = make_prober(hooked_registry(upstream, receiver, alerts={"first_retry_seconds": 60}))
        run_round(prober)
        flip(prober, upstream, 500)
        started = time.monotonic()
        wait_for(lambda: prober.dispatch() is not None and all(
            json.loads(v).get("err") == "timeout" for v in store.client.hvals(store.tenant_base("acme") + "outbox")) and
            store.client.hlen(store.tenant_base("acme") + "outbox") == 3, timeout_s=10, interval_s=0.2)
        assert time.monotonic() - started < 5  # cut off at the 1 s deadline, not after 30 s of drip
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert token not in caplog.text


@pytest.mark.parametrize("path", ["/admin/tenants/api/webhooks", "/admin/tenants/api/maintenance", "/admin/tenants/api/badge-tokens"])
def test_a_10_mb_body_is_refused_whole(web, path) -> None:
    response = web.post(path, data=b"{" + b" " * (10 * 1024 * 1024) + b"}", headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "request_entity_too_large"
