"""Integrations made through the admin API: edits, what /status shows, what probers do, and secrets at rest."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import pytest

from status_service import create_app
from status_service.cipher import Cipher
from status_service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, integration, key_digest, make_registry, run_round, tenant, wait_for

ADMIN = {"Authorization": "Bearer admin-secret"}
OPEN = {"allow_private_addresses": True}  # the tests' upstreams are on 127.0.0.1


def file_registry(upstream, **probe: Any):
    return make_registry(
        [tenant("filecorp", ["file-key"], [integration("1", "MJ", upstream.url("/file"))])],
        probe=probe or None,
        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}],
    )


@pytest.fixture
def registry_open(upstream):
    return file_registry(upstream, **OPEN)


@pytest.fixture
def prober(registry_open, make_prober):
    """A prober of a config file that lets admin API probes reach 127.0.0.1, having seeded Redis."""
    made = make_prober(registry_open, cipher=Cipher([TEST_SECRET_KEY]))
    run_round(made)
    return made


def make_web(redis_url: str, prefix: str, **extra: Any):
    options = {"secret_keys": TEST_SECRET_KEY, "web_memory_bytes": 0, **extra}
    return create_app(Settings(redis_url=redis_url, key_prefix=prefix, **options)).test_client()


@pytest.fixture
def web(redis_url, prefix, prober) -> Iterator[Any]:
    yield make_web(redis_url, prefix)


@pytest.fixture
def acme(web) -> str:
    """Tenant acme, made through the API, and a key of it."""
    assert web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN).status_code == 201
    return web.post("/admin/tenants/acme/keys", headers=ADMIN).get_json()["key"]


def put(web, iid: str, url: str, kind: str = "MJ", tenant_id: str = "acme", **probe: Any):
    return web.put(f"/admin/tenants/{tenant_id}/integrations/{iid}", json={"type": kind, "probe": {"url": url, **probe}}, headers=ADMIN)


def rows(web, key: str) -> dict[str, dict[str, Any]]:
    response = web.get("/status", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return {r["id"]: r for r in response.get_json()["data"]["integrations"]}


def status_document(web, key: str) -> dict[str, Any]:
    return web.get("/status", headers={"Authorization": f"Bearer {key}"}).get_json()


def audit_actions(web) -> list[tuple[str, str]]:
    return [(e["action"], e["object"]) for e in web.get("/admin/audit", headers=ADMIN).get_json()["entries"]]


def test_a_new_integration_shows_at_once_and_the_same_put_again_changes_nothing(web, acme, upstream) -> None:
    created = put(web, "mj-1", upstream.url("/a"), expect_status=[200])
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert body["id"] == "mj-1" and body["type"] == "MJ" and body["probe"]["url"] == upstream.url("/a")
    assert rows(web, acme)["mj-1"] == {"id": "mj-1", "status": "unknown", "type": "MJ", "checked_at": None,
                                       "latency_ms": None, "reason": "not_checked_yet", "reason_category": None}
    document = status_document(web, acme)
    assert document["status"] == "unhealthy" and document["data"]["stats_by_integration_type"]["MJ"]["total_count"] == 1
    again = put(web, "mj-1", upstream.url("/a"), expect_status=[200])
    assert again.status_code == 200 and again.get_json() == body  # idempotent: same answer, no change
    assert audit_actions(web).count(("integration.create", "tenants/acme/integrations/mj-1")) == 1
    assert ("integration.replace", "tenants/acme/integrations/mj-1") not in audit_actions(web)


def test_a_prober_that_is_running_probes_a_new_integration_and_drops_a_removed_one(web, acme, upstream, prober) -> None:
    assert put(web, "mj-1", upstream.url("/a")).status_code == 201
    run_round(prober)  # one tick
    assert upstream.count("/a") == 1
    assert rows(web, acme)["mj-1"]["status"] == "healthy"
    assert web.delete("/admin/tenants/acme/integrations/mj-1", headers=ADMIN).status_code == 204
    assert "mj-1" not in rows(web, acme)  # at once, before any prober has seen it
    assert status_document(web, acme)["data"]["total_integrations_count"] == 0
    run_round(prober)
    assert prober.backoff_s == 0  # following a removal is no Redis failure
    store = prober.store
    assert not store.client.hexists(store.results_key("acme"), "mj-1")
    assert store.client.zscore(store.due_key(), "acme\x1fmj-1") is None
    assert web.delete("/admin/tenants/acme/integrations/mj-1", headers=ADMIN).status_code == 404


def test_a_replaced_integration_starts_over_and_keeps_its_place(web, acme, upstream, prober) -> None:
    put(web, "a", upstream.url("/a"))
    put(web, "b", upstream.url("/b"), kind="DALL-E")
    run_round(prober)
    assert {r["status"] for r in rows(web, acme).values()} == {"healthy"}
    replaced = put(web, "a", upstream.url("/a2"), kind="RW")
    assert replaced.status_code == 200
    assert list(rows(web, acme)) == ["a", "b"]
    assert rows(web, acme)["a"]["reason"] == "not_checked_yet" and rows(web, acme)["a"]["type"] == "RW"
    run_round(prober)
    assert upstream.count("/a2") == 1 and rows(web, acme)["a"]["status"] == "healthy"
    assert list(rows(web, acme)) == ["a", "b"]  # the prober's report keeps the order too
    assert audit_actions(web)[-1] == ("integration.replace", "tenants/acme/integrations/a")


def test_admin_reads_never_show_a_credential(web, acme, upstream) -> None:
    secret_header, secret_query = "Bearer sk-header-credential-1234567890", "query-credential-0987654321"
    response = put(web, "x", f"{upstream.url('/x')}?api_key={secret_query}&region=eu",
                   headers={"Authorization": secret_header, "X-Plain": "also-hidden"})
    shown = [response.get_data(as_text=True),
             web.get("/admin/tenants/acme/integrations/x", headers=ADMIN).get_data(as_text=True),
             web.get("/admin/tenants/acme/integrations", headers=ADMIN).get_data(as_text=True),
             web.get("/admin/audit", headers=ADMIN).get_data(as_text=True),
             web.get("/status", headers={"Authorization": f"Bearer {acme}"}).get_data(as_text=True)]
    for text in shown:
        assert secret_header not in text and secret_query not in text and "also-hidden" not in text
    probe = json.loads(shown[1])["probe"]
    assert probe["headers"] == {"Authorization": "***", "X-Plain": "***"}
    assert probe["url"] == upstream.url("/x") + "?api_key=***&region=***"
    for url, masked in [("https://sk_live_USER@api.example.com/v1", "https://***@api.example.com/v1"),
                        ("https://sk_live_USER:@api.example.com/v1", "https://***@api.example.com/v1"),
                        ("https://user:pa%40ss@api.example.com/v1?BAREKEY&a=1#FRAGSECRET", "https://***@api.example.com/v1?***&a=***#***")]:
        response = put(web, "u", url)
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        for text in (response.get_data(as_text=True), web.get("/admin/tenants/acme/integrations/u", headers=ADMIN).get_data(as_text=True)):
            assert json.loads(text)["probe"]["url"] == masked
            assert "USER" not in text and "pa%40ss" not in text and "BAREKEY" not in text and "FRAGSECRET" not in text


def test_no_credential_is_in_redis_in_the_clear(web, acme, upstream, prober) -> None:
    secret_header, secret_query = "sk-header-credential-1234567890", "query-credential-0987654321"
    put(web, "x", f"{upstream.url('/x')}?api_key={secret_query}", headers={"Authorization": secret_header})
    put(web, "y", upstream.url("/y"), headers={"X-Key": secret_header})
    web.delete("/admin/tenants/acme/integrations/y", headers=ADMIN)
    run_round(prober)
    assert upstream.headers["/x"]["Authorization"] == secret_header  # the prober did send it
    store = prober.store
    names = list(store.client.scan_iter(f"{store.prefix}*"))
    assert store.integrations_key("acme").encode() in names and store.feed_key().encode() in names
    for name in names:
        dumped = store.client.dump(name)
        assert secret_header.encode() not in dumped and secret_query.encode() not in dumped
    from tests.test_admin import every_value  # DUMP may compress: read every value by type too
    everything = every_value(store)
    assert secret_header.encode() not in everything and secret_query.encode() not in everything


def test_bad_bodies_get_400_naming_every_field(web, acme, upstream) -> None:
    response = web.put("/admin/tenants/acme/integrations/x", headers=ADMIN,
                       json={"id": "other", "probe": {"url": "ftp://nowhere", "interval_seconds": "often", "extra": 1}, "colour": "red"})
    assert response.status_code == 400
    error = response.get_json()
    assert error["status"] == "error" and error["error"]["code"] == "invalid_request"
    assert {"type", "colour", "probe.url", "probe.interval_seconds", "probe.extra"} <= set(error["fields"])
    mismatch = web.put("/admin/tenants/acme/integrations/x", headers=ADMIN, json={"id": "other", "type": "MJ", "probe": {"url": upstream.url("/x")}})
    assert mismatch.status_code == 400 and set(mismatch.get_json()["fields"]) == {"id"}
    bad_path = web.put("/admin/tenants/acme/integrations/bad%20id", headers=ADMIN, json={"type": "MJ", "probe": {"url": upstream.url("/x")}})
    assert bad_path.status_code == 400 and set(bad_path.get_json()["fields"]) == {"path.integration_id"}
    stale = put(web, "x", upstream.url("/x"), interval_seconds=30, stale_after_seconds=30)
    assert stale.status_code == 400 and "probe.stale_after_seconds" in stale.get_json()["fields"]
    bulky = put(web, "x", upstream.url("/x") + "?" + "q" * 2100, headers={f"X-H{n}": "v" for n in range(65)})
    assert bulky.status_code == 400 and {"probe.url", "probe.headers"} <= set(bulky.get_json()["fields"])
    not_json = web.put("/admin/tenants/acme/integrations/x", headers=ADMIN, data="type=MJ", content_type="text/plain")
    assert not_json.status_code == 415
    huge = web.put("/admin/tenants/acme/integrations/x", headers=ADMIN, data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                   content_type="application/json")
    assert huge.status_code == 413
    assert web.get("/admin/tenants/acme/integrations", headers=ADMIN).get_json()["integrations"] == []


def test_integrations_of_a_missing_or_file_tenant_are_refused(web, upstream) -> None:
    assert put(web, "x", upstream.url("/x"), tenant_id="nobody").status_code == 404
    assert web.get("/admin/tenants/nobody/integrations", headers=ADMIN).status_code == 404
    assert web.get("/admin/tenants/filecorp/integrations/1", headers=ADMIN).status_code == 409
    refused = put(web, "x", upstream.url("/x"), tenant_id="filecorp")
    assert refused.status_code == 409 and "config file" in refused.get_json()["error"]["message"]
    assert web.put("/admin/tenants/acme/integrations/x", json={"type": "MJ"}).status_code == 401


def test_listing_is_paged_by_id(web, acme, upstream) -> None:
    for iid in ["c", "a", "b"]:
        put(web, iid, upstream.url(f"/{iid}"))
    first = web.get("/admin/tenants/acme/integrations?limit=2", headers=ADMIN).get_json()
    assert [i["id"] for i in first["integrations"]] == ["a", "b"] and first["next_cursor"] == "b"
    rest = web.get(f"/admin/tenants/acme/integrations?limit=2&cursor={first['next_cursor']}", headers=ADMIN).get_json()
    assert [i["id"] for i in rest["integrations"]] == ["c"] and rest["next_cursor"] is None
    assert web.get("/admin/tenants/acme/integrations?limit=0", headers=ADMIN).status_code == 400


def test_a_tenant_holds_at_most_the_configured_number_of_integrations(redis_url, prefix, upstream, make_prober) -> None:
    reg = make_registry([], probe=OPEN, admin={"max_integrations_per_tenant": 2},
                        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    run_round(make_prober(reg))
    web = make_web(redis_url, prefix)
    web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN)
    assert put(web, "a", upstream.url("/a")).status_code == 201
    assert put(web, "b", upstream.url("/b")).status_code == 201
    full = put(web, "c", upstream.url("/c"))
    assert full.status_code == 409 and full.get_json()["error"]["code"] == "limit_reached"
    assert put(web, "b", upstream.url("/b2")).status_code == 200  # replacing one is no new one
    web.delete("/admin/tenants/acme/integrations/a", headers=ADMIN)
    assert put(web, "c", upstream.url("/c")).status_code == 201


def test_racing_edits_of_one_tenant_lose_no_update(web, acme, upstream) -> None:
    errors: list[str] = []

    def add(name: str) -> None:
        for n in range(15):
            response = put(web, f"{name}-{n}", upstream.url(f"/{name}/{n}"))
            if response.status_code != 201:
                errors.append(response.get_data(as_text=True))

    threads = [threading.Thread(target=add, args=(name,)) for name in "pqr"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    listed = web.get("/admin/tenants/acme/integrations", headers=ADMIN).get_json()["integrations"]
    assert len(listed) == 45 and len(rows(web, acme)) == 45
    assert status_document(web, acme)["data"]["total_integrations_count"] == 45


def test_deleting_a_tenant_takes_its_integrations_with_it(web, acme, upstream, prober) -> None:
    put(web, "a", upstream.url("/a"))
    run_round(prober)
    assert web.delete("/admin/tenants/acme", headers=ADMIN).status_code == 204
    store = prober.store
    assert store.client.zscore(store.due_key(), "acme\x1fa") is None
    assert not store.client.exists(store.integrations_key("acme"), store.results_key("acme"), store.report_key("acme"))
    run_round(prober)
    assert "acme" not in prober.catalog.tenants and upstream.count("/a") == 1
    assert put(web, "a", upstream.url("/a")).status_code == 404


def test_a_removed_integration_never_comes_back_from_a_probe_in_flight(web, acme, upstream, registry_open, make_prober) -> None:
    cipher = Cipher([TEST_SECRET_KEY])
    first, second = make_prober(registry_open, cipher=cipher), make_prober(registry_open, cipher=cipher)
    run_round(first)
    run_round(second)
    put(web, "slow", upstream.url("/slow", delay_s=1.0))
    first.tick()  # claims it and starts probing: the upstream answers in a second
    wait_for(lambda: upstream.count("/slow") == 1)
    assert web.delete("/admin/tenants/acme/integrations/slow", headers=ADMIN).status_code == 204
    first.drain()  # the result lands after the removal
    run_round(second)
    store = first.store
    assert not store.client.hexists(store.results_key("acme"), "slow")
    assert "slow" not in rows(web, acme) and "slow" not in first.catalog.tenants["acme"].integrations
    assert store.client.zscore(store.due_key(), "acme\x1fslow") is None


def test_a_probe_in_flight_when_its_integration_changes_is_dropped_and_the_new_one_probed_at_once(web, acme, upstream, prober) -> None:
    put(web, "x", upstream.url("/old", delay_s=1.0, status=500))
    prober.tick()
    wait_for(lambda: upstream.count("/old") == 1)
    assert put(web, "x", upstream.url("/new")).status_code == 200
    prober.drain()  # the old probe's failure is not the new definition's: dropped, and the new one claimed at once
    if upstream.count("/new") == 0:
        run_round(prober)  # or at the next tick, not an interval later
    prober.drain()
    assert upstream.count("/new") == 1 and rows(web, acme)["x"]["status"] == "healthy"
    state = json.loads(prober.store.client.hget(prober.store.results_key("acme"), "x"))
    assert state["fails"] == 0 and state["oks"] == 1  # the old probe's failure was never written


def test_a_second_prober_probes_an_integration_it_learns_of_from_its_claim(web, acme, upstream, registry_open, make_prober) -> None:
    other = make_prober(registry_open, cipher=Cipher([TEST_SECRET_KEY]))
    run_round(other)
    put(web, "a", upstream.url("/a"))
    other.start_probes(wait=True)  # no tick in between: the claim itself makes it catch up
    other.drain()
    assert upstream.count("/a") == 1


def test_the_address_policy_guards_what_the_api_registers(redis_url, prefix, upstream, make_prober) -> None:
    run_round(make_prober(file_registry(upstream), cipher=Cipher([TEST_SECRET_KEY])))  # the policy stands
    web = make_web(redis_url, prefix)
    web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN)
    for url in ["https://169.254.169.254/latest/meta-data", "https://127.0.0.1/x", "https://[::1]/x",
                "https://localhost/x", "https://10.1.2.3/x", "https://[::ffff:127.0.0.1]/x"]:
        refused = put(web, "x", url)
        assert refused.status_code == 400, url
        assert list(refused.get_json()["fields"]) == ["probe.url"], refused.get_json()
    post = put(web, "x", "https://203.0.113.9/x", method="POST")  # (a documentation address is refused too)
    assert set(post.get_json()["fields"]) == {"probe.method", "probe.url"}
    plain = put(web, "x", "http://93.184.215.14/x", headers={"Authorization": "Bearer k"})
    assert plain.status_code == 400 and "https" in plain.get_json()["fields"]["probe.url"][0]
    assert put(web, "x", "https://93.184.215.14/x", headers={"Authorization": "Bearer k"}).status_code == 201


def test_a_probe_of_the_api_is_refused_at_connect_time_too(redis_url, prefix, upstream, make_prober, store) -> None:
    # Registered while the file lifted the policy; a prober whose file does not lift it refuses to connect.
    lifted = make_prober(file_registry(upstream, **OPEN), cipher=Cipher([TEST_SECRET_KEY]))
    run_round(lifted)
    web = make_web(redis_url, prefix)
    web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN)
    key = web.post("/admin/tenants/acme/keys", headers=ADMIN).get_json()["key"]
    put(web, "x", upstream.url("/x"))
    lifted.stop(timeout_s=0)
    strict = make_prober(file_registry(upstream), cipher=Cipher([TEST_SECRET_KEY]))
    run_round(strict)
    run_round(strict)
    assert upstream.count("/x") == 0
    assert rows(web, key)["x"]["reason"] == "address_refused"


def test_keys_rotate_new_writes_use_the_first_and_reads_try_each(redis_url, prefix, acme, upstream, registry_open, make_prober) -> None:
    from cryptography.fernet import Fernet

    new_key = Fernet.generate_key().decode()
    old_web = make_web(redis_url, prefix)
    put(old_web, "old", upstream.url("/old"), headers={"X-Key": "old-secret"})
    rotated = make_web(redis_url, prefix, secret_keys=f"{new_key},{TEST_SECRET_KEY}")
    put(rotated, "new", upstream.url("/new"), headers={"X-Key": "new-secret"})
    assert rotated.get("/admin/tenants/acme/integrations/old", headers=ADMIN).status_code == 200
    unreadable = old_web.get("/admin/tenants/acme/integrations/new", headers=ADMIN)  # a worker not given the new key
    assert unreadable.status_code == 500 and "STATUS_SECRET_KEY" in unreadable.get_json()["error"]["message"]
    prober = make_prober(registry_open, cipher=Cipher([new_key, TEST_SECRET_KEY]))
    run_round(prober)
    assert upstream.headers["/old"]["X-Key"] == "old-secret" and upstream.headers["/new"]["X-Key"] == "new-secret"
    only_new = Cipher([new_key])
    stored = prober.store.client.hget(prober.store.integrations_key("acme"), "new")
    assert json.loads(only_new.open(json.loads(stored)["probe"]))["headers"] == {"X-Key": "new-secret"}


def test_real_processes_pick_up_an_integration_added_and_removed_through_the_api_within_a_tick(redis_url, prefix, tmp_path, upstream) -> None:
    import sys

    import requests
    import yaml

    from tests.conftest import environment, free_port, spawn, stop

    config = tmp_path / "status.yaml"
    config.write_text(yaml.safe_dump({
        "probe": {"interval_seconds": 30, "timeout_seconds": 2, "allow_private_addresses": True},
        "tenants": [],
        "admin_keys": [{"id": "ops", "sha256": key_digest("admin-secret")}],
    }))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(redis_url, prefix, config, PORT=str(port), WEB_CONCURRENCY="2")
    log = open(tmp_path / "processes.log", "wb")
    prober = spawn([sys.executable, "-m", "status_service.prober"], env, log)
    web = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log)
    try:
        def answers():
            try:
                return requests.post(f"{base}/admin/tenants", json={"id": "acme"}, headers=ADMIN, timeout=2).status_code == 201
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout_s=20, interval_s=0.1)  # the prober has seeded the admin key
        key = requests.post(f"{base}/admin/tenants/acme/keys", headers=ADMIN, timeout=2).json()["key"]
        time.sleep(1.5)  # the prober is running, and idle
        added = time.monotonic()
        response = requests.put(f"{base}/admin/tenants/acme/integrations/mj", headers=ADMIN, timeout=2,
                                json={"type": "MJ", "probe": {"url": upstream.url("/mj") + "?api_key=process-query-secret",
                                                              "headers": {"Authorization": "Bearer process-secret"}}})
        assert response.status_code == 201
        wait_for(lambda: upstream.count("/mj") == 1, timeout_s=5, interval_s=0.01)
        assert time.monotonic() - added < 1.5  # one tick (1 s), and the time a probe takes

        def status_of_mj():
            rows = requests.get(f"{base}/status", headers={"Authorization": f"Bearer {key}"}, timeout=2).json()["data"]["integrations"]
            return next((r["status"] for r in rows if r["id"] == "mj"), None)

        wait_for(lambda: status_of_mj() == "healthy", timeout_s=3)
        # A 10 MB body is refused without being read whole, and the service goes on answering.
        huge = requests.put(f"{base}/admin/tenants/acme/integrations/big", headers={**ADMIN, "Content-Type": "application/json"},
                            data=b"{" + b" " * (10 * 1024 * 1024) + b"}", timeout=10)
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_entity_too_large"

        # Two web workers, two clients racing on one tenant: no update lost.
        def add(name: str) -> None:
            for n in range(10):
                requests.put(f"{base}/admin/tenants/acme/integrations/{name}{n}", headers=ADMIN, timeout=5,
                             json={"type": "RW", "probe": {"url": upstream.url(f"/{name}{n}")}}).raise_for_status()

        racers = [threading.Thread(target=add, args=(name,)) for name in ("p", "q")]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        listed = requests.get(f"{base}/admin/tenants/acme/integrations?limit=100", headers=ADMIN, timeout=2).json()["integrations"]
        assert len(listed) == 21
        document = requests.get(f"{base}/status", headers={"Authorization": f"Bearer {key}"}, timeout=2).json()
        assert document["data"]["total_integrations_count"] == 21
        for name in ("p", "q"):
            for n in range(10):
                requests.delete(f"{base}/admin/tenants/acme/integrations/{name}{n}", headers=ADMIN, timeout=2).raise_for_status()
        assert requests.delete(f"{base}/admin/tenants/acme/integrations/mj", headers=ADMIN, timeout=2).status_code == 204
        assert status_of_mj() is None
        upstream.url("/mj", status=500)
        time.sleep(2.5)  # more than two ticks: a removed integration is probed no more, and never shows again
        assert status_of_mj() is None and upstream.count("/mj") == 1
    finally:
        stop(web)
        stop(prober)
        log.close()
    output = (tmp_path / "processes.log").read_text()
    assert "process-secret" not in output and "process-query-secret" not in output and "Traceback" not in output, output
    assert "registry.seeded" in output


def test_a_prober_that_learns_of_a_change_late_keeps_the_result_another_prober_wrote_for_it(
        web, acme, upstream, registry_open, make_prober) -> None:
    cipher = Cipher([TEST_SECRET_KEY])
    late, early = make_prober(registry_open, cipher=cipher), make_prober(registry_open, cipher=cipher)
    put(web, "x", upstream.url("/x"))
    put(web, "y", upstream.url("/y"))
    run_round(late)
    run_round(early)
    put(web, "x", upstream.url("/x2", status=503), failure_threshold=1)
    run_round(early)  # learns of it, probes it: unhealthy
    assert upstream.count("/x2") == 1
    store = late.store
    store.client.zadd(store.due_key(), {"acme\x1fy": 0})
    late.start_probes(wait=True)  # records y, and so takes x's new state into a view that holds x's old definition
    late.drain()
    late.tick()  # learns of the change now: x's state must survive the change being applied
    late.drain()
    assert late.views["acme"].report.states["x"].status.value == "unhealthy"
    late.write_reports(late.clock(), force=True)
    assert rows(web, acme)["x"]["status"] == "unhealthy" and list(rows(web, acme)) == ["x", "y"]


def test_a_file_sync_never_touches_what_the_api_made(web, acme, upstream, make_prober, prober) -> None:
    put(web, "x", upstream.url("/x"))
    newer = make_registry([tenant("filecorp", ["file-key"], [integration("2", "MJ", upstream.url("/file2"))])],
                          probe=OPEN, generation=5, admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    restarted = make_prober(newer)
    restarted.ensure_seeded(restarted.clock())  # generation 5: filecorp's integration 1 goes, acme's x stays
    store = restarted.store
    assert store.client.zscore(store.due_key(), "acme\x1fx") is not None
    assert store.client.zscore(store.due_key(), "filecorp\x1f1") is None
    run_round(prober)  # a prober that follows the admin API's integrations
    assert upstream.count("/x") == 1 and rows(web, acme)["x"]["status"] == "healthy"
    assert web.get("/admin/tenants/acme/integrations/x", headers=ADMIN).status_code == 200


def test_a_tenant_deletion_a_crash_cut_short_is_finished_and_its_data_never_reaches_a_new_tenant(web, acme, upstream, prober) -> None:
    from status_service.store.admin import _DELETE_TENANT, AUDIT_RETENTION_S, Admin

    put(web, "old", upstream.url("/old"), headers={"Authorization": "Bearer OLD-OWNER-CREDENTIAL"})
    run_round(prober)
    store, admin = prober.store, Admin(prober.store)
    keys = [store.api_tenants_key(), store.tenants_key(), store.keys_key(), store.generation_key(), admin.audit_key(),
            store.api_keys_key("acme")]
    store._script(_DELETE_TENANT, keys, ["acme", "ops", "then", AUDIT_RETENTION_S * 1000, store.channel])  # then the worker died
    prober.reconcile_at = 0
    run_round(prober)
    assert "acme" not in prober.catalog.tenants  # a tenant no longer made is probed no more
    assert web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN).status_code == 201  # a new customer takes the id
    assert web.get("/admin/tenants/acme/integrations", headers=ADMIN).get_json()["integrations"] == []
    assert not store.client.exists(store.integrations_key("acme"), store.results_key("acme"))
    key = web.post("/admin/tenants/acme/keys", headers=ADMIN).get_json()["key"]
    assert rows(web, key) == {}


def test_a_deletion_retried_after_a_crash_removes_what_the_crash_left(web, acme, upstream, prober) -> None:
    from status_service.store.admin import _DELETE_TENANT, AUDIT_RETENTION_S, Admin

    put(web, "old", upstream.url("/old"))
    store, admin = prober.store, Admin(prober.store)
    keys = [store.api_tenants_key(), store.tenants_key(), store.keys_key(), store.generation_key(), admin.audit_key(),
            store.api_keys_key("acme")]
    store._script(_DELETE_TENANT, keys, ["acme", "ops", "then", AUDIT_RETENTION_S * 1000, store.channel])
    assert web.delete("/admin/tenants/acme", headers=ADMIN).status_code == 204
    assert not store.client.exists(store.integrations_key("acme"), store.report_key("acme"))
    assert web.delete("/admin/tenants/acme", headers=ADMIN).status_code == 404


def test_a_tenant_creation_a_crash_cut_short_is_finished_by_the_next_call(web, prober) -> None:
    from status_service.store.admin import _CREATE_TENANT, AUDIT_RETENTION_S, Admin

    store, admin = prober.store, Admin(prober.store)
    made = json.dumps({"created_at": "then", "inc": "f00d"})
    store._script(_CREATE_TENANT, [store.api_tenants_key(), store.tenants_key(), admin.audit_key()],
                  ["acme", made, "ops", "then", AUDIT_RETENTION_S * 1000])  # then the worker died
    key = web.post("/admin/tenants/acme/keys", headers=ADMIN).get_json()["key"]
    assert web.get("/status", headers={"Authorization": f"Bearer {key}"}).status_code == 503  # no report yet
    assert put(web, "a", "https://api.example.com/v1").status_code == 201
    assert list(rows(web, key)) == ["a"]


def test_a_definition_this_prober_cannot_decrypt_is_left_to_the_others_and_read_again(redis_url, prefix, web, acme, upstream, registry_open,
                                                                                     make_prober, caplog) -> None:
    import logging

    from cryptography.fernet import Fernet

    new_key = Fernet.generate_key().decode()
    behind = make_prober(registry_open, cipher=Cipher([TEST_SECRET_KEY]))  # not given the new key yet
    run_round(behind)
    put(web, "a", upstream.url("/a"))
    rolled = make_web(redis_url, prefix, secret_keys=f"{new_key},{TEST_SECRET_KEY}")
    put(rolled, "x", upstream.url("/x"))
    with caplog.at_level(logging.ERROR, logger="status_service"):
        run_round(behind, rounds=3)
    assert caplog.text.count("registry.unreadable") == 1 and "x" not in behind.catalog.tenants["acme"].integrations
    assert upstream.count("/x") == 0 and upstream.count("/a") == 1
    put(web, "y", upstream.url("/y"))  # a later change, readable: applied
    run_round(behind)
    assert upstream.count("/y") == 1
    ahead = make_prober(registry_open, cipher=Cipher([new_key, TEST_SECRET_KEY]))
    behind.store.client.zadd(behind.store.due_key(), {"acme\x1fx": 0})  # handed back for 5 s: as if they passed
    run_round(ahead)
    assert upstream.count("/x") == 1  # probed by a prober that can read it
    assert list(rows(web, acme)) == ["a", "x", "y"]


def test_an_integration_removed_and_made_again_moves_to_the_end_for_every_prober(web, acme, upstream, registry_open, make_prober) -> None:
    cipher = Cipher([TEST_SECRET_KEY])
    first = make_prober(registry_open, cipher=cipher)
    for iid in "abc":
        put(web, iid, upstream.url(f"/{iid}"))
    run_round(first)
    web.delete("/admin/tenants/acme/integrations/a", headers=ADMIN)
    put(web, "a", upstream.url("/a"))
    assert list(rows(web, acme)) == ["b", "c", "a"]
    run_round(first)  # learns of both changes at once
    assert [i.id for i in first.integrations_of("acme")] == ["b", "c", "a"] and list(rows(web, acme)) == ["b", "c", "a"]
    fresh = make_prober(registry_open, cipher=cipher)
    run_round(fresh)
    assert [i.id for i in fresh.integrations_of("acme")] == ["b", "c", "a"] and list(rows(web, acme)) == ["b", "c", "a"]


def test_each_claim_is_leased_for_its_own_probe(web, acme, upstream, prober) -> None:
    import time as clock

    run_round(prober)
    upstream.routes["/file"].delay_s = 1.0
    put(web, "long", upstream.url("/long", delay_s=1.0), timeout_seconds=60, interval_seconds=3600)
    store = prober.store
    store.client.zadd(store.due_key(), {"filecorp\x1f1": 0})
    prober.start_probes(wait=True)  # claims both, learning of "long" from its claim
    wait_for(lambda: upstream.count("/long") == 1 and upstream.count("/file") >= 2)
    now_ms = clock.time() * 1000
    long_lease = store.client.zscore(store.due_key(), "acme\x1flong") - now_ms
    file_lease = store.client.zscore(store.due_key(), "filecorp\x1f1") - now_ms
    assert 60_000 < long_lease < 90_000  # its 60 s deadline, and more
    assert file_lease < 20_000  # a long probe of another tenant does not hold this claim for longer
    prober.drain()


def test_a_late_unschedule_never_takes_out_an_integration_put_again(web, acme, upstream, prober) -> None:
    from status_service.store.catalog import Catalog

    store = prober.store
    put(web, "x", upstream.url("/x"))
    before = store.client.zscore(store.due_key(), "acme\x1fx")
    web.delete("/admin/tenants/acme/integrations/x", headers=ADMIN)
    assert store.client.zscore(store.due_key(), "acme\x1fx") is None
    put(web, "x", upstream.url("/x2"))
    Catalog(store).unschedule_if("acme\x1fx", before)  # the deletion's last step, had it run after the new put
    assert store.client.zscore(store.due_key(), "acme\x1fx") is not None
    run_round(prober)
    assert upstream.count("/x2") == 1


def test_a_member_nothing_defines_is_taken_out_of_the_schedule_by_the_prober_that_claims_it(web, acme, upstream, prober) -> None:
    store = prober.store
    put(web, "x", upstream.url("/x"))
    run_round(prober)
    web.delete("/admin/tenants/acme", headers=ADMIN)
    store.client.zadd(store.due_key(), {"acme\x1fx": 0, "acme\x1flate": 0, "nobody\x1f1": 0})  # a put that lost a race, say
    run_round(prober)
    assert store.client.zscore(store.due_key(), "acme\x1fx") is None and store.client.zscore(store.due_key(), "nobody\x1f1") is None
    assert store.client.zscore(store.due_key(), "acme\x1flate") is None
    assert store.client.zscore(store.due_key(), "filecorp\x1f1") is not None  # the file's: defined, kept


def test_a_change_whose_feed_entry_was_lost_is_found_by_the_next_reconcile(web, acme, upstream, prober) -> None:
    from status_service import report as reports
    from status_service.store.catalog import Catalog

    put(web, "a", upstream.url("/a"))
    run_round(prober)
    definition = {"type": "MJ", "probe": Cipher([TEST_SECRET_KEY]).seal(json.dumps({"url": upstream.url("/lost")})),
                  "created_at": "t", "updated_at": "t"}
    row = reports.encode({"id": "lost", "status": "unknown", "type": "MJ", "checked_at": None, "latency_ms": None, "reason": "not_checked_yet"})
    Catalog(prober.store).change("acme", "lost", definition, row, reports.iso(time.time()), 100)  # then the worker died
    run_round(prober)
    assert "lost" not in prober.catalog.tenants["acme"].integrations  # no feed entry named it
    prober.reconcile_at = 0  # a minute later
    run_round(prober)
    assert upstream.count("/lost") == 1 and list(rows(web, acme)) == ["a", "lost"]


def test_a_prober_further_behind_than_a_tenant_keeps_reads_it_whole(web, acme, upstream, prober) -> None:
    put(web, "a", upstream.url("/a"))
    run_round(prober)
    put(web, "b", upstream.url("/b"))
    web.delete("/admin/tenants/acme/integrations/a", headers=ADMIN)
    put(web, "c", upstream.url("/c"))
    store = prober.store
    store.client.xtrim(store.tenant_changes_key("acme"), maxlen=1, approximate=False)  # the entries it needs are trimmed
    run_round(prober)
    assert list(prober.catalog.tenants["acme"].integrations) == ["b", "c"]
    assert upstream.count("/b") == 1 and upstream.count("/c") == 1


def test_a_prober_that_missed_feed_entries_reads_every_tenant_again(web, acme, upstream, prober, caplog) -> None:
    import logging

    put(web, "a", upstream.url("/a"))
    run_round(prober)
    put(web, "b", upstream.url("/b"))
    store = prober.store
    store.client.delete(store.feed_key())  # lost, with every entry this prober had not read
    put(web, "c", upstream.url("/c"))
    with caplog.at_level(logging.WARNING, logger="status_service"):
        run_round(prober)
    assert "registry.feed_missed" in caplog.text
    assert list(prober.catalog.tenants["acme"].integrations) == ["a", "b", "c"]


def test_probers_that_learn_of_changes_together_or_one_by_one_agree_on_the_order(web, acme, upstream, registry_open, make_prober) -> None:
    cipher = Cipher([TEST_SECRET_KEY])
    first = make_prober(registry_open, cipher=cipher)
    put(web, "x", upstream.url("/x"))
    run_round(first)  # it holds a view of acme: [x]
    put(web, "a", upstream.url("/a"))
    put(web, "b", upstream.url("/b"))
    web.delete("/admin/tenants/acme/integrations/a", headers=ADMIN)
    put(web, "a", upstream.url("/a"))  # made again: after b
    assert list(rows(web, acme)) == ["x", "b", "a"]
    run_round(first)  # all four changes in one read
    assert [i.id for i in first.views["acme"].report.integrations] == ["x", "b", "a"]
    assert list(rows(web, acme)) == ["x", "b", "a"]
    second = make_prober(registry_open, cipher=cipher)
    run_round(second)
    assert [i.id for i in second.views["acme"].report.integrations] == ["x", "b", "a"]


def test_a_late_second_step_of_a_tenant_creation_changes_nothing(web, acme, upstream, prober) -> None:
    from status_service import report as reports
    from status_service.store.admin import Admin

    put(web, "x", upstream.url("/x"))
    store = prober.store
    before = store.client.get(store.registry_key("acme"))
    inc = before.decode().split(":")[1]
    Admin(store)._write("acme", inc, reports.encode(reports.build_report((), {}, time.time())))  # stalled, lands now
    assert store.client.get(store.registry_key("acme")) == before and list(rows(web, acme)) == ["x"]


def test_a_seed_that_drops_a_file_tenant_spares_an_api_tenant_made_of_its_id_meanwhile(store, upstream, make_prober) -> None:
    admin_keys = [{"id": "ops", "sha256": key_digest("admin-secret")}]
    run_round(make_prober(make_registry([tenant("t", ["k"], [integration("1", "MJ", upstream.url("/t"))])], generation=1,
                                        admin_keys=admin_keys)))
    # Between the next seed's first step and its drop, the admin API made a tenant "t" (here, its data by hand).
    store.client.set(store.registry_key("t"), "api:inc:0")
    store.client.hset(store.integrations_key("t"), "a", "{}")
    store.seed("print", 2, {}, {}, {}, {digest: admin for admin, digest in [(k["id"], k["sha256"]) for k in admin_keys]})
    assert store.client.get(store.registry_key("t")) == b"api:inc:0" and store.client.hexists(store.integrations_key("t"), "a")
