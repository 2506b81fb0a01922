"""Maintenance windows: made through the admin API, applied by probers, ended on time, out of every count and alert."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from status_service import create_app, rollup, webhooks
from status_service.cipher import Cipher
from status_service.settings import Settings
from status_service.store.history import History
from tests.conftest import TEST_SECRET_KEY, integration, key_digest, make_registry, run_round, tenant

ADMIN = {"Authorization": "Bearer admin-secret"}


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat()


@pytest.fixture
def prober(upstream, make_prober):
    """acme: 1 (MJ, healthy) and 2 (DALL-E, unhealthy: 503), each probed once."""
    reg = make_registry([tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj")),
                                                       integration("2", "DALL-E", upstream.url("/dalle", status=503))])],
                        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    made = make_prober(reg, cipher=Cipher([TEST_SECRET_KEY]))
    run_round(made)
    return made


@pytest.fixture
def web(redis_url, prefix, prober):
    return create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()


def open_window(web, seconds: float, **body) -> dict:
    now = time.time()
    made = web.post("/admin/tenants/acme/maintenance", json={"starts_at": iso(now - 1), "ends_at": iso(now + seconds), **body}, headers=ADMIN)
    assert made.status_code == 201, made.get_data(as_text=True)
    return made.get_json()


def status(web) -> dict:
    return web.get("/status", headers={"Authorization": "Bearer acme-key"}).get_json()


def test_an_integration_in_maintenance_is_out_of_the_counts_until_the_window_ends(web, prober, store) -> None:
    assert status(web)["status"] == "degraded"
    since = time.time() + 0.001  # event ids are rounded to the ms
    window = open_window(web, 2.5, integrations=["2"], note="DALL-E key rotation")
    assert window["state"] == "active" and window["note"] == "DALL-E key rotation"
    prober.read_windows(time.time(), force=True)
    run_round(prober)
    document = status(web)
    rows = {r["id"]: r for r in document["data"]["integrations"]}
    assert (rows["2"]["status"], rows["2"]["reason"]) == ("maintenance", "maintenance")
    assert document["status"] == "ok" and document["data"]["healthy_percentage"] == 100.0
    assert (document["data"]["healthy_integrations_count"], document["data"]["total_integrations_count"]) == (1, 1)
    assert "DALL-E" not in document["data"]["stats_by_integration_type"]
    # It ends by itself: the next tick past its end writes the report without it, no probe needed.
    time.sleep(max(0.0, _ends(window) + 1 - time.time()))  # shown to the second: its end is within the second after
    prober.tick()
    prober.drain()
    document = status(web)
    assert {r["id"]: r["status"] for r in document["data"]["integrations"]} == {"1": "healthy", "2": "unhealthy"}
    assert document["status"] == "degraded"
    edges = [(e.body["previous"], e.body["current"]) for e in History(store).events("acme", None, 100)
             if e.body["scope"] == "maintenance" and e.body["maintenance"] == window["id"]]
    assert edges == [("inactive", "active"), ("active", "inactive")]  # an event at each edge
    scopes = [e.body["scope"] for e in History(store).events("acme", None, 100) if e.at > since]
    assert "status" not in scopes and "type" not in scopes  # the window moved no status: no alert
    assert all(not webhooks.event_type(e.body) for e in History(store).events("acme", None, 100) if e.body["scope"] == "maintenance")


def _ends(window: dict) -> float:
    return datetime.fromisoformat(window["ends_at"].replace("Z", "+00:00")).timestamp()


def test_changes_inside_a_window_are_marked_and_send_no_alert(web, prober, store, upstream) -> None:
    open_window(web, 60, types=["MJ"])
    prober.read_windows(time.time(), force=True)
    upstream.url("/mj", status=500)
    for _ in range(2):  # two failures turn it unhealthy
        store.client.zadd(store.due_key(), {"acme\x1f1": 0})
        run_round(prober)
    changes = [e.body for e in History(store).events("acme", None, 100) if e.body["scope"] == "integration" and e.body["integration"]["id"] == "1"]
    assert changes[-1]["current"] == "unhealthy" and changes[-1]["maintenance"] is True
    assert webhooks.event_type(changes[-1]) is None
    detail = web.get("/status/integrations/1", headers={"Authorization": "Bearer acme-key"}).get_json()
    assert sorted(c["status"] for c in detail["last_checks"]) == ["healthy", "maintenance", "maintenance"]  # its history is marked
    assert status(web)["data"]["integrations"][0]["status"] == "maintenance"


def test_a_cancelled_window_ends_at_once(web, prober) -> None:
    window = open_window(web, 600)
    prober.read_windows(time.time(), force=True)
    run_round(prober)
    assert status(web)["data"]["total_integrations_count"] == 0 and status(web)["status"] == "ok"
    assert web.delete(f"/admin/tenants/acme/maintenance/{window['id']}", headers=ADMIN).status_code == 204
    assert web.delete(f"/admin/tenants/acme/maintenance/{window['id']}", headers=ADMIN).status_code == 404
    prober.read_windows(time.time(), force=True)
    prober.drain()
    assert status(web)["data"]["total_integrations_count"] == 2


def test_windows_are_listed_with_where_they_stand(web) -> None:
    now = time.time()
    later = web.post("/admin/tenants/acme/maintenance", json={"starts_at": iso(now + 3600), "ends_at": iso(now + 7200)}, headers=ADMIN)
    assert later.get_json()["state"] == "scheduled"
    open_window(web, 60)
    listed = web.get("/admin/tenants/acme/maintenance", headers=ADMIN).get_json()["maintenance"]
    assert [w["state"] for w in listed] == ["active", "scheduled"]


@pytest.mark.parametrize("body, field", [
    ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-09T00:00:01Z"}, "ends_at"),  # over 7 days
    ({"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, "ends_at"),  # ends first
    ({"starts_at": "2020-01-01T00:00:00Z", "ends_at": "2020-01-02T00:00:00Z"}, "ends_at"),  # over already
    ({"starts_at": "2030-01-01T00:00:00", "ends_at": "2030-01-02T00:00:00Z"}, "starts_at"),  # no time zone
    ({"starts_at": "tomorrow", "ends_at": "2030-01-02T00:00:00Z"}, "starts_at"),
    ({"ends_at": "2030-01-02T00:00:00Z"}, "starts_at"),
    ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z", "integrations": ["bad id!"]}, "integrations"),
    ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z", "note": "x" * 501}, "note"),
    ({"starts_at": "0001-01-01T00:00:00+14:00", "ends_at": "2030-01-02T00:00:00Z", "long": True}, "starts_at"),
    ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "9999-12-31T23:59:59-14:00", "long": True}, "ends_at"),
])
def test_bad_windows_are_refused_naming_the_field(web, body, field) -> None:
    response = web.post("/admin/tenants/acme/maintenance", json=body, headers=ADMIN)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert any(name.split(".")[0] == field for name in response.get_json()["fields"]), response.get_json()


def test_a_long_window_must_say_so(web) -> None:
    body = {"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-20T00:00:00Z"}
    assert web.post("/admin/tenants/acme/maintenance", json=body, headers=ADMIN).status_code == 400
    assert web.post("/admin/tenants/acme/maintenance", json={**body, "long": True}, headers=ADMIN).status_code == 201
    assert web.post("/admin/tenants/nobody/maintenance", json=body, headers=ADMIN).status_code == 404


def test_maintenance_time_is_out_of_the_healthy_percentage() -> None:
    """Two integrations: one healthy throughout, one unhealthy then in maintenance: 50 %, then 100 %."""
    def track(*checks: tuple[float, str]) -> rollup.Track:
        return rollup.Track("x", "MJ", 1000.0, tuple(rollup.Check(at, status == "healthy", status, 1, None) for at, status in checks))

    tracks = [track((0.0, "healthy"), (60.0, "healthy")), track((0.0, "unhealthy"), (60.0, "maintenance"))]
    points = rollup.scope_points(tracks, 0.0, 120.0)[rollup.OVERALL]
    assert [round(p.integral / p.covered_s, 6) for p in points] == [50.0, 100.0]
    buckets = rollup.integration_buckets(tracks[1], 0.0, 120.0, 60.0)
    assert [(b.healthy_s, b.unhealthy_s) for b in buckets] == [(0.0, 60.0), (0.0, 0.0)]  # out of uptime too


def test_a_window_over_the_only_healthy_integration_moves_no_status(web, prober, store) -> None:
    since = time.time() + 0.001  # event ids are rounded to the ms
    open_window(web, 60, integrations=["1"])
    prober.read_windows(time.time())
    prober.drain()
    document = status(web)
    assert document["status"] == "unhealthy"  # what is left, 2, is unhealthy: the document says so
    assert not [e for e in History(store).events("acme", None, 100) if e.body["scope"] in ("status", "type") and e.at > since]


def test_two_probers_agree_on_a_window_one_has_not_heard_of(web, prober, store, make_prober) -> None:
    """The other prober writes the report from the windows as they are, not as it last heard: no flip, one edge event."""
    other = make_prober(prober.registry, cipher=Cipher([TEST_SECRET_KEY]))
    run_round(other)
    since = time.time() + 0.001  # event ids are rounded to the ms
    window = open_window(web, 60, integrations=["2"])
    prober.read_windows(time.time())
    prober.drain()
    store.client.zadd(store.due_key(), {"acme\x1f1": 0, "acme\x1f2": 0})
    other.start_probes()  # no tick: it has not read the change
    other.drain()
    rows = {r["id"]: r["status"] for r in status(web)["data"]["integrations"]}
    assert rows == {"1": "healthy", "2": "maintenance"}
    edges = [e.body for e in History(store).events("acme", None, 100) if e.body["scope"] == "maintenance"]
    assert [(e["maintenance"], e["current"]) for e in edges] == [(window["id"], "active")]
    assert not [e for e in History(store).events("acme", None, 100) if e.body["scope"] in ("status", "type") and e.at > since]


def test_a_change_inside_a_window_is_announced_once_after_it(web, prober, store, upstream) -> None:
    since = time.time() + 0.001  # event ids are rounded to the ms
    window = open_window(web, 2.0, integrations=["1"])
    prober.read_windows(time.time())
    upstream.url("/mj", status=500)
    for _ in range(2):  # it breaks inside the window
        store.client.zadd(store.due_key(), {"acme\x1f1": 0})
        run_round(prober)
    time.sleep(max(0.0, _ends(window) + 1 - time.time()))
    store.client.zadd(store.due_key(), {"acme\x1f1": 0})
    run_round(prober)  # still broken after it
    alerts = [e.body for e in History(store).events("acme", None, 100) if webhooks.event_type(e.body) and e.at > since]
    ones = [a for a in alerts if a["scope"] == "integration"]
    assert len(ones) == 1 and (ones[0]["previous"], ones[0]["current"], ones[0]["resumed"]) == ("healthy", "unhealthy", True)
    assert [a["current"] for a in alerts if a["scope"] == "status"] == ["unhealthy"]  # once, as the window closed


def test_windows_that_ended_long_ago_make_room(web, store) -> None:
    """The limit counts what is kept: windows ended over a week ago are dropped as a new one is made."""
    import json as _json

    old = {"starts_at": time.time() - 30 * 86400, "ends_at": time.time() - 29 * 86400, "created_at": "x"}
    store.client.hset(store.tenant_base("acme") + "maintenance", mapping={f"mw_old{n}": _json.dumps(old) for n in range(100)})
    assert web.post("/admin/tenants/acme/maintenance", json={"starts_at": iso(time.time()), "ends_at": iso(time.time() + 60)},
                    headers=ADMIN).status_code == 201
    assert len(web.get("/admin/tenants/acme/maintenance", headers=ADMIN).get_json()["maintenance"]) == 1


def test_a_window_made_as_its_tenant_is_deleted_is_refused(store) -> None:
    from status_service.store.maintenance import Maintenance

    store.client.set(store.registry_key("gone"), "gone:inc", px=60_000)  # what a deletion leaves for a while
    assert Maintenance(store).add("gone", "mw_x", {"starts_at": 1, "ends_at": 2}, time.time(), 100) == -1
    assert Maintenance(store).add("never", "mw_x", {"starts_at": 1, "ends_at": 2}, time.time(), 100) == -1
    assert not store.client.exists(store.tenant_base("gone") + "maintenance", store.tenant_base("never") + "maintenance")
