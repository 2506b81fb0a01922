"""The config file's generation, and probers whose registry lags: nothing they hold comes back."""
from __future__ import annotations

import logging
import os
import time

import pytest
import yaml

from status_service import create_app
from status_service.registry import ConfigError
from tests.conftest import (
    environment, integration, make_registry, report_of, run_round, start_prober, stop, tenant, wait_for,
)


def config(tmp_path, generation: int | None, key: str, ids: list[str], upstream) -> os.PathLike:
    """Write a one-tenant config file of this generation (None: no generation given)."""
    document = {
        "probe": {"interval_seconds": 1, "timeout_seconds": 0.5},
        "prober": {"tick_seconds": 0.2},
        "tenants": [tenant("acme", [key], [integration(i, "MJ", upstream.url(f"/{i}")) for i in ids])],
    }
    if generation is not None:
        document["generation"] = generation
    path = tmp_path / f"status-{generation}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def status_code(client, key: str) -> int:
    return client.get("/status", headers={"Authorization": f"Bearer {key}"}).status_code


def test_a_revoked_key_stays_revoked_when_a_prober_restarts_with_an_older_file(tmp_path, upstream, redis_url, prefix, settings) -> None:
    client = create_app(settings).test_client()
    log_path = tmp_path / "probers.log"
    logs = open(log_path, "wb")
    newer = config(tmp_path, 2, "new-key", ["a", "b"], upstream)  # old-key revoked, b added
    older = config(tmp_path, 1, "old-key", ["a"], upstream)
    prober = start_prober(environment(redis_url, prefix, newer), logs)
    try:
        wait_for(lambda: status_code(client, "new-key") == 200, timeout_s=15)
    finally:
        stop(prober)
    prober = start_prober(environment(redis_url, prefix, older), logs)  # a stale image, say
    try:
        wait_for(lambda: "registry.older_generation" in log_path.read_text(), timeout_s=15)
        time.sleep(1)  # a few ticks of the stale prober
        assert status_code(client, "old-key") == 401
        assert status_code(client, "new-key") == 200
        ids = [i["id"] for i in client.get("/status", headers={"Authorization": "Bearer new-key"}).get_json()["data"]["integrations"]]
        assert ids == ["a", "b"]
        assert prober.poll() is None  # it goes on probing what it shares with the seeded registry
    finally:
        stop(prober)
        logs.close()


def test_the_same_generation_applies_again_and_a_newer_one_replaces_it(store, upstream, make_prober, caplog) -> None:
    first = make_registry([tenant("acme", ["k1"], [integration("a", "MJ", upstream.url("/a"))])], generation=3)
    again = make_registry([tenant("acme", ["k1"], [integration("a", "MJ", upstream.url("/a"))])], generation=3)
    newer = make_registry([tenant("acme", ["k2"], [integration("a", "MJ", upstream.url("/a"))])], generation=4)
    with caplog.at_level(logging.WARNING, logger="status_service"):
        run_round(make_prober(first))
        run_round(make_prober(again))
        assert "registry.older_generation" not in caplog.text
        run_round(make_prober(newer))
        run_round(make_prober(first))  # generation 3 again, after 4
        assert "registry.older_generation" in caplog.text
    owners = {d.decode(): t.decode() for d, t in store.client.hgetall(store.keys_key()).items()}
    assert owners == {key: "acme" for key in newer.tenants[0].key_digests}


def test_a_redis_that_lost_its_data_is_seeded_again_whatever_the_generation(store, upstream, make_prober) -> None:
    run_round(make_prober(make_registry([tenant("acme", ["k2"], [])], generation=9)))
    for key in store.client.scan_iter(f"{store.prefix}*"):
        store.client.delete(key)
    run_round(make_prober(make_registry([tenant("acme", ["k1"], [])], generation=1)))
    assert store.is_seeded() and store.client.get(store.file_key()) == b"1"


def test_an_integration_removed_mid_probe_never_comes_back(store, upstream, make_prober, caplog) -> None:
    slow = upstream.url("/slow", delay_s=1.0)
    fast = upstream.url("/fast")
    before = make_registry([tenant("acme", ["k"], [integration("keep", "MJ", fast), integration("gone", "MJ", slow)])])
    after = make_registry([tenant("acme", ["k"], [integration("keep", "MJ", fast)])])
    lagging = make_prober(before)  # a prober that has not reloaded yet
    lagging.tick()
    wait_for(lambda: upstream.count("/slow") == 1)  # "gone" is in flight on it
    reloaded = make_prober(after)
    run_round(reloaded)  # seeds the registry without "gone"
    assert [i["id"] for i in report_of(store, "acme")["data"]["integrations"]] == ["keep"]
    with caplog.at_level(logging.WARNING, logger="status_service"):
        lagging.drain()  # its probe of "gone" lands now
        run_round(lagging, rounds=2)
    assert "registry.behind" in caplog.text
    assert not store.client.hexists(store.results_key("acme"), "gone")
    assert [i["id"] for i in report_of(store, "acme")["data"]["integrations"]] == ["keep"]
    # The up-to-date prober still writes. "keep" may have been the lagging one's to probe, its result
    # refused as "gone"'s was if it landed after the new seed: make it due, for this prober to take.
    store.client.zadd(store.due_key(), {"acme\x1fkeep": 0})
    run_round(reloaded)
    assert report_of(store, "acme")["data"]["integrations"][0]["status"] == "healthy"


def test_a_prober_whose_registry_lags_still_writes_the_tenants_that_did_not_change(store, upstream, make_prober) -> None:
    probe = {"interval_seconds": 1, "timeout_seconds": 0.5}
    acme = tenant("acme", ["k"], [integration("a", "MJ", upstream.url("/a"), failure_threshold=1)])
    lagging = make_prober(make_registry([acme, tenant("globex", ["g"], [integration("x", "MJ", upstream.url("/x"))])], probe))
    run_round(lagging)
    run_round(make_prober(make_registry([acme, tenant("globex", ["g"], [integration("y", "MJ", upstream.url("/y"))])], probe)))
    upstream.url("/a", status=503)
    time.sleep(1.1)  # "a" falls due again
    run_round(lagging)
    assert report_of(store, "acme")["data"]["integrations"][0]["status"] == "unhealthy"  # acme is the same in both
    assert not store.client.hexists(store.results_key("globex"), "x")


@pytest.mark.parametrize("value, message", [
    (True, "generation: not a whole number"),
    (-1, "generation: must be greater than or equal to 0"),
    ("7", "generation: not a whole number"),
])
def test_a_bad_generation_is_named(value, message) -> None:
    with pytest.raises(ConfigError) as caught:
        make_registry([tenant("acme", ["k"], [])], generation=value)
    assert message in str(caught.value)


def test_a_file_without_a_generation_is_generation_0() -> None:
    assert make_registry([tenant("acme", ["k"], [])]).generation == 0


def test_a_newer_prober_replaces_an_older_file_seeded_into_an_empty_redis(store, upstream, make_prober, settings) -> None:
    older = make_registry([tenant("acme", ["old-key"], [integration("a", "MJ", upstream.url("/a")), integration("gone", "MJ", upstream.url("/g"))])], generation=1)
    newer = make_registry([tenant("acme", ["new-key"], [integration("a", "MJ", upstream.url("/a"))])], generation=2)
    stale, fresh = make_prober(older), make_prober(newer)
    run_round(fresh)
    for key in store.client.scan_iter(f"{store.prefix}*"):  # Redis restarts empty ...
        store.client.delete(key)
    run_round(stale)  # ... and the stale prober happens to seed it first
    run_round(fresh)
    client = create_app(settings).test_client()
    assert status_code(client, "old-key") == 401 and status_code(client, "new-key") == 200
    assert [i["id"] for i in report_of(store, "acme")["data"]["integrations"]] == ["a"]
    assert store.client.get(store.file_key()) == b"2"


def test_an_older_seed_overtaken_halfway_by_a_newer_one_changes_nothing_after_it(store, upstream, make_prober) -> None:
    older = make_registry([tenant("acme", ["k"], [integration("a", "MJ", upstream.url("/a")), integration("gone", "MJ", upstream.url("/g"))])], generation=1)
    newer = make_registry([tenant("acme", ["k"], [integration("a", "MJ", upstream.url("/a"))])], generation=2)
    fresh = make_prober(newer)
    run_round(fresh)
    seeded_print = store.client.get(store.registry_key("acme"))
    # The older seed passed its first step before the newer one began: as if Redis said generation 1 then.
    store.client.set(store.file_key(), 1)
    make_prober(older).ensure_seeded(time.time())
    assert store.client.get(store.registry_key("acme")) == seeded_print  # every later step refused
    assert {m.decode() for m in store.client.zrange(store.due_key(), 0, -1)} == {"acme\x1fa"}
    run_round(fresh)  # and the up-to-date prober is not fenced out
    assert [i["id"] for i in report_of(store, "acme")["data"]["integrations"]] == ["a"]
    assert report_of(store, "acme")["data"]["integrations"][0]["status"] == "healthy"


def test_a_tenant_whose_keys_were_lost_alone_is_seeded_again(store, upstream, make_prober, caplog) -> None:
    prober = make_prober(make_registry([tenant("acme", ["k"], [integration("a", "MJ", upstream.url("/a"))])],
                                       {"interval_seconds": 1, "timeout_seconds": 0.5}))
    run_round(prober)
    for key in store.tenant_keys("acme"):  # a cluster shard lost its data, the rest did not
        store.client.delete(key)
    with caplog.at_level(logging.WARNING, logger="status_service"):
        def healthy_again() -> bool:
            run_round(prober)
            report = report_of(store, "acme")  # none until the tenant is seeded again
            return report is not None and report["data"]["integrations"][0]["status"] == "healthy"

        wait_for(healthy_again, timeout_s=5, interval_s=0.3)
    assert "registry.tenant_lost" in caplog.text


def test_a_lagging_prober_of_the_same_generation_does_not_bring_back_a_removed_tenant(store, upstream, make_prober, caplog) -> None:
    probe = {"interval_seconds": 1, "timeout_seconds": 0.5}
    both = make_registry([tenant("acme", ["a"], [integration("1", "MJ", upstream.url("/a"))]),
                          tenant("gone", ["g"], [integration("1", "MJ", upstream.url("/g", delay_s=0.3))])], probe)
    lagging = make_prober(both)
    lagging.tick()  # "gone" in flight on it (its upstream answers in 0.3 s, after the other prober's seed)
    run_round(make_prober(make_registry([tenant("acme", ["a"], [integration("1", "MJ", upstream.url("/a"))])], probe)))
    with caplog.at_level(logging.WARNING, logger="status_service"):
        lagging.drain()
        run_round(lagging, rounds=2)
    assert "registry.tenant_lost" not in caplog.text and "registry.behind" in caplog.text
    assert not store.is_registered("gone") and report_of(store, "gone") is None
