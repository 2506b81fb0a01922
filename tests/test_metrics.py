"""GET /metrics: parsed with prometheus_client's own parser and checked against a known state."""
from __future__ import annotations

import sys
import time

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from status_service import create_app
from status_service.settings import Settings
from status_service.store import Store, StoreUnavailable, connect
from tests.conftest import (
    TEST_SECRET_KEY, environment, free_port, integration, key_digest, make_registry, run_round, spawn, stop, tenant, wait_for,
)

TOKEN = "metrics-token-for-tests"


def registry(upstream, **extra):
    """acme: MJ healthy, DALL-E unhealthy (503); globex: Runway healthy. Ids no label may carry."""
    return make_registry([
        tenant("acme", ["acme-key"], [integration("int-mj-7", "MJ", upstream.url("/mj")),
                                      integration("int-dalle-9", "DALL-E", upstream.url("/dalle", status=503))]),
        tenant("globex", ["globex-key"], [integration("int-runway-3", "Runway", upstream.url("/runway"))]),
    ], **extra)


def samples(client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape and parse: (sample name, sorted labels) -> value."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def app_client(redis_url: str, prefix: str, token: str | None = None):
    return create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0,
                               metrics_token=token)).test_client()


def test_metrics_show_the_known_state(redis_url, prefix, upstream, make_prober, store) -> None:
    prober = make_prober(registry(upstream))
    run_round(prober)
    found = samples(app_client(redis_url, prefix))
    integrations = {labels: v for (name, labels), v in found.items() if name == "status_integrations"}
    assert integrations[(("state", "healthy"), ("type", "MJ"))] == 1
    assert integrations[(("state", "unhealthy"), ("type", "DALL-E"))] == 1
    assert integrations[(("state", "healthy"), ("type", "DALL-E"))] == 0  # every state shows, zeros too
    assert integrations[(("state", "healthy"), ("type", "Runway"))] == 1
    assert sum(integrations.values()) == 3
    assert found[("status_probes_total", (("reason", "http_503"), ("type", "DALL-E")))] == 1
    assert found[("status_probes_total", (("reason", "ok"), ("type", "MJ")))] == 1
    assert found[("status_probe_duration_seconds_count", (("type", "MJ"),))] == 1
    assert found[("status_probe_duration_seconds_bucket", (("le", "+Inf"), ("type", "MJ")))] == 1
    assert 0 < found[("status_probe_duration_seconds_sum", (("type", "MJ"),))] < 5
    assert found[("status_webhook_deliveries_total", (("result", "delivered"),))] == 0
    assert found[("status_probers", ())] == 1
    assert found[("status_prober_lag_seconds", ())] == 0  # nothing due waits: every integration was just probed
    # Bounded cardinality: no label carries an integration id, and no tenant label unless asked for.
    labels = {value for _, pairs in found for _, value in pairs} | {name for _, pairs in found for name, _ in pairs}
    assert not {"int-mj-7", "int-dalle-9", "int-runway-3", "tenant", "acme"} & labels


def test_counters_from_several_probers_add_up(redis_url, prefix, upstream, make_prober, store) -> None:
    reg = registry(upstream)
    first, second = make_prober(reg), make_prober(reg)
    run_round(first)
    store.client.zadd(store.due_key(), {i.member: 0 for i in reg.integrations})  # all due again: the second probes them
    run_round(second)
    found = samples(app_client(redis_url, prefix))
    assert found[("status_probes_total", (("reason", "ok"), ("type", "MJ")))] == 2
    assert found[("status_probe_duration_seconds_count", (("type", "Runway"),))] == 2
    assert found[("status_probers", ())] == 2


def test_the_tenant_label_is_off_by_default_and_on_when_asked(redis_url, prefix, upstream, make_prober) -> None:
    run_round(make_prober(registry(upstream, metrics={"tenant_label": True})))
    found = samples(app_client(redis_url, prefix))
    assert found[("status_integrations", (("state", "unhealthy"), ("tenant", "acme"), ("type", "DALL-E")))] == 1
    assert found[("status_integrations", (("state", "healthy"), ("tenant", "globex"), ("type", "Runway")))] == 1


def test_lag_is_the_wait_of_the_oldest_due_integration(redis_url, prefix, upstream, make_prober, store) -> None:
    reg = registry(upstream)
    run_round(make_prober(reg))
    store.client.zadd(store.due_key(), {reg.integrations[0].member: int((time.time() - 120) * 1000)})
    lag = samples(app_client(redis_url, prefix))[("status_prober_lag_seconds", ())]
    assert 119 <= lag <= 130


def test_a_report_no_prober_rewrote_is_counted_as_it_ages(redis_url, prefix, upstream, make_prober, store) -> None:
    run_round(make_prober(registry(upstream)))
    # The fleet is gone and acme's results have turned stale: /metrics says unknown, as /status does.
    store.client.hset(store.report_key("acme"), mapping={"until": 1, "stale": '{"int-mj-7": 1.0, "int-dalle-9": 1.0}'})
    found = samples(app_client(redis_url, prefix))
    assert found[("status_integrations", (("state", "unknown"), ("type", "MJ")))] == 1
    assert found[("status_integrations", (("state", "unknown"), ("type", "DALL-E")))] == 1
    assert found[("status_integrations", (("state", "healthy"), ("type", "Runway")))] == 1


def test_http_requests_are_counted_by_route_and_code(redis_url, prefix, upstream, make_prober) -> None:
    run_round(make_prober(registry(upstream)))
    client = app_client(redis_url, prefix)
    key = ("status_http_requests_total", (("code", "200"), ("route", "/status")))
    before = samples(client).get(key, 0)
    for _ in range(3):
        assert client.get("/status", headers={"Authorization": "Bearer acme-key"}).status_code == 200
    client.get("/status/integrations/int-mj-7/nothing-here")
    found = samples(client)
    assert found[key] == before + 3
    assert found[("status_http_requests_total", (("code", "404"), ("route", "(unmatched)")))] >= 1
    assert found[("status_http_request_duration_seconds_count", (("route", "/status"),))] >= 3


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
                                           "Bearer \u00e9\u00e9", "Bearer " + "x" * 10000])
def test_a_metrics_token_keeps_others_out(redis_url, prefix, upstream, make_prober, authorization) -> None:
    run_round(make_prober(registry(upstream)))
    client = app_client(redis_url, prefix, TOKEN)
    response = client.get("/metrics", headers={} if authorization is None else {"Authorization": authorization})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized" and TOKEN not in response.get_data(as_text=True)
    assert samples(client, Authorization=f"Bearer {TOKEN}")[("status_probers", ())] == 1


def test_a_prober_that_cannot_reach_redis_keeps_its_counts_for_later(upstream, make_prober, store, redis_url, prefix) -> None:
    prober = make_prober(registry(upstream))
    run_round(prober)
    prober.tally.probe("MJ", None, 0.2)
    prober.store = Store(connect("redis://127.0.0.1:1/0", 0.2), prefix)  # Redis is gone
    with pytest.raises(StoreUnavailable):
        prober.flush_metrics(force=True)
    prober.store = store  # and back
    prober.flush_metrics(force=True)
    assert samples(app_client(redis_url, prefix))[("status_probes_total", (("reason", "ok"), ("type", "MJ")))] == 2


def test_gunicorn_workers_sum_their_counters(redis_url, prefix, upstream, tmp_path) -> None:
    """Under gunicorn with several workers, every scrape shows the requests all of them answered."""
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump({"tenants": [{"id": "acme", "api_keys": [{"sha256": key_digest("acme-key")}],
                                                 "integrations": [integration("1", "MJ", upstream.url("/mj"))]}]}))
    port = free_port()
    # A directory the operator names but did not make: made, not a 500 on every request.
    env = environment(redis_url, prefix, path, PORT=str(port), WEB_CONCURRENCY="3", STATUS_METRICS_TOKEN=TOKEN,
                      PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "not" / "made" / "yet"))
    log = open(tmp_path / "web.log", "wb")
    web = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log)
    try:
        wait_for(lambda: _answers(port), timeout_s=20)
        session_less = [requests.get(f"http://127.0.0.1:{port}/livez", timeout=2) for _ in range(60)]  # new connections: any worker
        assert all(r.status_code == 200 for r in session_less)
        scraped = [requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
                   for _ in range(6)]
        for response in scraped:
            assert response.status_code == 200
            found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                     for f in text_string_to_metric_families(response.text) for s in f.samples}
            assert found[("status_http_requests_total", (("code", "200"), ("route", "/livez")))] >= 60
    finally:
        stop(web)
        log.close()
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_new_integration_due_at_once_is_no_lag(redis_url, prefix, upstream, make_prober, store) -> None:
    run_round(make_prober(registry(upstream)))
    store.client.zadd(store.due_key(), {"acme\x1fnew": 0})  # as the admin API or a seed schedules a new one
    assert samples(app_client(redis_url, prefix))[("status_prober_lag_seconds", ())] == 0
