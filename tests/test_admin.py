"""The admin API: tenants and keys made through it, against a real Redis and a registry seeded by a prober."""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any, Iterator

import pytest

from status_service import create_app
from status_service.registry import ConfigError
from status_service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, integration, key_digest, make_registry, run_round, tenant, wait_for

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def seeded(store, upstream, make_prober):
    """A registry from the config file: tenant filecorp (key file-key) and the admin key ops."""
    reg = make_registry(
        [tenant("filecorp", ["file-key"], [integration("1", "MJ", upstream.url("/p"))])],
        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}],
    )
    run_round(make_prober(reg))
    return reg


@pytest.fixture
def web(redis_url, prefix, seeded) -> Iterator[Any]:
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0))
    yield app.test_client()


def every_value(store) -> bytes:
    """Return every name, field and value under the test's prefix, read by type, joined."""
    client, parts = store.client, []
    for name in client.scan_iter(f"{store.prefix}*"):
        kind = client.type(name).decode()
        parts.append(name)
        if kind == "string":
            parts.append(client.get(name))
        elif kind == "hash":
            parts += [x for pair in client.hgetall(name).items() for x in pair]
        elif kind == "set":
            parts += list(client.smembers(name))
        elif kind == "zset":
            parts += client.zrange(name, 0, -1)
        elif kind == "stream":
            parts += [x for _, fields in client.xrange(name) for pair in fields.items() for x in pair]
    return b"\n".join(parts)


def status_code(web, key: str) -> int:
    return web.get("/status", headers={"Authorization": f"Bearer {key}"}).status_code


def make_tenant(web, tenant_id: str) -> None:
    assert web.post("/admin/tenants", json={"id": tenant_id}, headers=ADMIN).status_code == 201


def make_key(web, tenant_id: str) -> dict[str, str]:
    response = web.post(f"/admin/tenants/{tenant_id}/keys", headers=ADMIN)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_only_admin_keys_get_in(web) -> None:
    missing = web.get("/admin/tenants")
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    assert web.get("/admin/tenants", headers={"Authorization": "Bearer nobody"}).status_code == 401
    tenant_key = web.get("/admin/tenants", headers={"Authorization": "Bearer file-key"})
    assert tenant_key.status_code == 403 and tenant_key.get_json()["error"]["code"] == "forbidden"
    assert web.get("/admin/tenants", headers=ADMIN).status_code == 200
    assert web.get("/admin/tenants", headers={"Authorization": "Basic " + "YWRtaW4tc2VjcmV0Og=="}).status_code == 200  # admin-secret:
    assert status_code(web, "admin-secret") == 401  # an admin key is not a tenant's


def test_the_environment_admin_key_gets_in_and_is_named_in_the_audit(redis_url, prefix, seeded) -> None:
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0, admin_key_sha256=key_digest("env-secret")))
    web = app.test_client()
    assert web.post("/admin/tenants", json={"id": "acme"}, headers={"Authorization": "Bearer env-secret"}).status_code == 201
    entries = web.get("/admin/audit", headers=ADMIN).get_json()["entries"]
    assert [(e["admin"], e["action"], e["object"]) for e in entries] == [("env", "tenant.create", "tenants/acme")]


def test_onboard_a_tenant_issue_a_key_and_poll_status(web, store) -> None:
    created = web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN)
    assert created.status_code == 201 and created.get_json()["source"] == "api"
    key = make_key(web, "acme")
    assert key["key"].startswith("sst_") and len(key["key"]) == 4 + 43 and key["id"].startswith("key_")
    response = web.get("/status", headers={"Authorization": f"Bearer {key['key']}"})
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok" and response.get_json()["data"]["total_integrations_count"] == 0
    listed = web.get("/admin/tenants/acme/keys", headers=ADMIN).get_json()["keys"]
    assert listed == [{"id": key["id"], "created_at": key["created_at"]}]
    # Only the digest is kept: the plain key is nowhere in Redis.
    everything = every_value(store)
    assert key_digest(key["key"]).encode() in everything
    assert key["key"].encode() not in everything


def test_a_revoked_key_and_a_deleted_tenant_stop_working(web, store) -> None:
    make_tenant(web, "acme")
    first, second = make_key(web, "acme"), make_key(web, "acme")
    assert web.delete(f"/admin/tenants/acme/keys/{first['id']}", headers=ADMIN).status_code == 204
    assert status_code(web, first["key"]) == 401 and status_code(web, second["key"]) == 200
    assert web.delete(f"/admin/tenants/acme/keys/{first['id']}", headers=ADMIN).status_code == 404
    assert web.delete("/admin/tenants/acme", headers=ADMIN).status_code == 204
    assert status_code(web, second["key"]) == 401
    assert web.get("/admin/tenants/acme", headers=ADMIN).status_code == 404
    registry, *data = store.tenant_keys("acme")
    assert not any(store.client.exists(k) for k in data)
    assert store.client.get(registry).startswith(b"gone:") and store.client.pttl(registry) > 0  # a tombstone, expiring
    assert web.delete("/admin/tenants/acme", headers=ADMIN).status_code == 404


def test_a_key_revoked_through_the_api_stops_working_within_a_second_on_a_worker_with_memory(redis_url, prefix, seeded) -> None:
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=8 * 1024 * 1024))
    web = app.test_client()
    try:
        make_tenant(web, "acme")
        key = make_key(web, "acme")
        wait_for(lambda: status_code(web, key["key"]) == 200 and app.extensions["status_web"].mirror.live)
        assert status_code(web, key["key"]) == 200  # now served from memory
        web.delete(f"/admin/tenants/acme/keys/{key['id']}", headers=ADMIN)
        revoked = time.monotonic()
        wait_for(lambda: status_code(web, key["key"]) == 401, timeout_s=2, interval_s=0.02)
        assert time.monotonic() - revoked < 1
    finally:
        app.extensions["status_web"].close()


def test_the_config_file_tenants_are_its_own(web) -> None:
    assert web.post("/admin/tenants", json={"id": "filecorp"}, headers=ADMIN).status_code == 409
    refused = web.delete("/admin/tenants/filecorp", headers=ADMIN)
    assert refused.status_code == 409 and "config file" in refused.get_json()["error"]["message"]
    assert web.get("/admin/tenants/filecorp", headers=ADMIN).get_json() == {"id": "filecorp", "source": "file"}
    key = make_key(web, "filecorp")  # a file tenant may be given keys through the API
    assert status_code(web, key["key"]) == 200 and status_code(web, "file-key") == 200


def test_a_file_sync_never_touches_what_the_api_made(web, upstream, make_prober) -> None:
    make_tenant(web, "acme")
    api_key = make_key(web, "acme")
    filecorp_api_key = make_key(web, "filecorp")
    newer = make_registry(
        [tenant("filecorp", ["file-key-2"], [integration("1", "MJ", upstream.url("/p"))])],
        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}], generation=1,
    )
    run_round(make_prober(newer))
    assert status_code(web, "file-key") == 401 and status_code(web, "file-key-2") == 200  # the file's keys moved
    assert status_code(web, api_key["key"]) == 200 and status_code(web, filecorp_api_key["key"]) == 200
    assert web.get("/admin/tenants/acme", headers=ADMIN).status_code == 200


def test_tenants_are_listed_a_page_at_a_time(web) -> None:
    for n in range(5):
        make_tenant(web, f"t{n}")
    seen, cursor = [], ""
    while True:
        page = web.get(f"/admin/tenants?limit=2&cursor={cursor}", headers=ADMIN).get_json()
        assert len(page["tenants"]) <= 2
        seen += [t["id"] for t in page["tenants"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["filecorp", "t0", "t1", "t2", "t3", "t4"]


def test_the_audit_names_every_change_and_never_a_key(web) -> None:
    make_tenant(web, "acme")
    key = make_key(web, "acme")
    web.delete(f"/admin/tenants/acme/keys/{key['id']}", headers=ADMIN)
    web.delete("/admin/tenants/acme", headers=ADMIN)
    first = web.get("/admin/audit?limit=2", headers=ADMIN).get_json()
    rest = web.get(f"/admin/audit?cursor={first['next_cursor']}", headers=ADMIN).get_json()
    entries = first["entries"] + rest["entries"]
    assert [(e["admin"], e["action"], e["object"]) for e in entries] == [
        ("ops", "tenant.create", "tenants/acme"),
        ("ops", "key.create", f"tenants/acme/keys/{key['id']}"),
        ("ops", "key.delete", f"tenants/acme/keys/{key['id']}"),
        ("ops", "tenant.delete", "tenants/acme"),
    ]
    assert rest["next_cursor"] is None
    assert all(e["at"].endswith("Z") for e in entries)
    assert key["key"] not in json.dumps(entries)


def test_two_admins_racing_on_one_tenant_lose_no_key(web) -> None:
    make_tenant(web, "acme")
    made: list[dict[str, str]] = []
    threads = [threading.Thread(target=lambda: made.append(make_key(web, "acme"))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    listed = {k["id"] for k in web.get("/admin/tenants/acme/keys", headers=ADMIN).get_json()["keys"]}
    assert listed == {k["id"] for k in made} and len(listed) == 20
    assert all(status_code(web, k["key"]) == 200 for k in made)


@pytest.mark.parametrize("kwargs, status, fields", [
    ({"data": "id=acme", "content_type": "application/x-www-form-urlencoded"}, 415, None),
    ({"data": "{not json", "content_type": "application/json"}, 400, None),
    ({"data": "[1, 2]", "content_type": "application/json"}, 400, None),
    ({"json": {}}, 400, {"id": ["Missing data for required field."]}),
    ({"json": {"id": 5.5}}, 400, {"id"}),
    ({"json": {"id": "bad id!"}}, 400, {"id"}),
    ({"json": {"id": "acme", "plan": "gold", "x": 1}}, 400, {"plan", "x"}),
    ({"data": json.dumps({"id": "a" * (2 * 1024 * 1024)}), "content_type": "application/json"}, 413, None),
    ({"json": {"id": "acme\n"}}, 400, {"id"}),
    ({"data": "[" * 100000 + "]" * 100000, "content_type": "application/json"}, 400, None),
])
def test_bad_bodies_get_a_clear_answer_naming_every_bad_field(web, kwargs: dict[str, Any], status: int, fields: Any) -> None:
    response = web.post("/admin/tenants", headers=ADMIN, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "error" and body["error"]["code"]
    if isinstance(fields, dict):
        assert body["fields"] == fields
    elif fields:
        assert set(body["fields"]) == fields


@pytest.mark.parametrize("path, field", [
    ("/admin/tenants/bad%20id", "path.tenant_id"),
    ("/admin/tenants/acme%0A", "path.tenant_id"),  # a trailing newline is no part of an id
    ("/admin/tenants?limit=%C2%B2", "query.limit"),  # a superscript two is a digit to str.isdigit
    ("/admin/audit?cursor=18446744073709551615-18446744073709551615", "query.cursor"),
    ("/admin/audit?cursor=%C2%B2-1", "query.cursor"),
    ("/admin/tenants/-x/keys", "path.tenant_id"),
    ("/admin/tenants?limit=0", "query.limit"),
    ("/admin/tenants?limit=abc", "query.limit"),
    ("/admin/audit?cursor=nope", "query.cursor"),
])
def test_bad_paths_and_queries_are_named(web, path: str, field: str) -> None:
    response = web.get(path, headers=ADMIN)
    assert response.status_code == 400 and field in response.get_json()["fields"]


def test_keys_of_a_tenant_that_does_not_exist(web) -> None:
    assert web.post("/admin/tenants/nobody/keys", headers=ADMIN).status_code == 404
    assert web.get("/admin/tenants/nobody/keys", headers=ADMIN).status_code == 404
    assert web.post("/admin/tenants/filecorp/keys", headers=ADMIN, data="x", content_type="text/plain").status_code == 415


def test_a_chunked_body_over_1_mib_is_refused_not_cut_short(web) -> None:
    body = b'{"id": "chunky"}' + b" " * (1024 * 1024)  # valid JSON, if read only to the limit
    response = web.post(
        "/admin/tenants", headers={**ADMIN, "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        input_stream=io.BytesIO(body), environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413, response.get_data(as_text=True)
    assert web.get("/admin/tenants/chunky", headers=ADMIN).status_code == 404


def test_a_tenant_removed_from_the_file_takes_the_keys_the_api_gave_it(web, store, upstream, make_prober) -> None:
    key = make_key(web, "filecorp")
    run_round(make_prober(make_registry([tenant("other", ["o"], [])],
                                        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}], generation=1)))
    assert status_code(web, key["key"]) == 401
    assert not store.client.exists(store.api_keys_key("filecorp"))


def test_a_file_that_declares_a_tenant_made_through_the_api_is_not_seeded(web, upstream, make_prober, caplog) -> None:
    make_tenant(web, "acme")
    key = make_key(web, "acme")
    taking = make_registry([tenant("acme", ["file-acme-key"], [integration("1", "MJ", upstream.url("/p"))])],
                           admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}], generation=5)
    with caplog.at_level(logging.ERROR, logger="status_service"):
        run_round(make_prober(taking))
    assert "registry.conflict" in caplog.text and "tenant=acme" in caplog.text
    assert status_code(web, "file-acme-key") == 401 and status_code(web, key["key"]) == 200
    assert status_code(web, "file-key") == 200  # the registry Redis held stands


def test_creating_and_deleting_one_tenant_at_once_leaves_no_data_of_a_deleted_tenant(web, store) -> None:
    for n in range(30):
        tenant_id = f"race{n}"
        threads = [threading.Thread(target=lambda: web.post("/admin/tenants", json={"id": tenant_id}, headers=ADMIN)),
                   threading.Thread(target=lambda: web.delete(f"/admin/tenants/{tenant_id}", headers=ADMIN))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        registry, *data = store.tenant_keys(tenant_id)
        if web.get(f"/admin/tenants/{tenant_id}", headers=ADMIN).status_code == 200:
            assert store.client.get(registry).startswith(b"api:") and store.client.exists(store.report_key(tenant_id))
        else:
            assert not any(store.client.exists(k) for k in data), tenant_id
            assert (store.client.get(registry) or b"gone:").startswith(b"gone:")


def test_an_admin_key_that_is_also_a_tenant_key_is_refused_in_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        make_registry([tenant("acme", ["shared"], [])], admin_keys=[{"id": "ops", "sha256": key_digest("shared")}])
    assert "admin_keys[0].sha256: also a tenant's key" in str(caught.value)


def test_audit_entries_older_than_90_days_are_trimmed(web, store) -> None:
    audit = f"{store.prefix}{{reg}}:audit"
    old_ms = int((time.time() - 91 * 24 * 3600) * 1000)
    store.client.xadd(audit, {"admin": "ops", "action": "tenant.create", "object": "tenants/old", "at": "2026-01-01T00:00:00Z"}, id=f"{old_ms}-0")
    recent_ms = int((time.time() - 89 * 24 * 3600) * 1000)
    store.client.xadd(audit, {"admin": "ops", "action": "tenant.create", "object": "tenants/recent", "at": "2026-01-02T00:00:00Z"}, id=f"{recent_ms}-0")
    make_tenant(web, "acme")  # every change trims what has aged out
    objects = [e["object"] for e in web.get("/admin/audit", headers=ADMIN).get_json()["entries"]]
    assert objects == ["tenants/recent", "tenants/acme"]
