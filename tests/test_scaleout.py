"""Probers as real processes sharing one Redis: no double probes, take-over, staleness, reloads."""
import os
import signal
import time

import pytest
import yaml

from status_service import create_app
from status_service.registry import load
from tests.conftest import environment, integration, key_digest, run_round, start_prober, stop, wait_for

INTERVAL = 3.0


def write_config(path, upstream, tenants: dict[str, list[str]], keys: dict[str, str] | None = None, **probe) -> None:
    """Write a config with one upstream path per integration, `/<tenant>/<integration>`."""
    keys = keys or {}
    document = {
        "probe": {"interval_seconds": INTERVAL, "timeout_seconds": 0.5, **probe},
        "prober": {"tick_seconds": 0.2},
        "tenants": [
            {
                "id": t,
                "api_keys": [{"sha256": key_digest(keys.get(t, f"{t}-key"))}],
                "integrations": [integration(i, "MJ", upstream.url(f"/{t}/{i}")) for i in ids],
            }
            for t, ids in tenants.items()
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(document))
    os.replace(tmp, path)  # atomic, as a deploy would do it


def closest_gap(upstream, paths) -> float:
    gaps = [b - a for p in paths for a, b in zip(upstream.times.get(p, []), upstream.times.get(p, [])[1:])]
    return min(gaps, default=float("inf"))


@pytest.fixture
def logs(tmp_path):
    handle = open(tmp_path / "probers.log", "wb")
    yield handle
    handle.close()


def test_two_probers_share_the_work_and_one_takes_over_after_sigkill(tmp_path, upstream, redis_url, prefix, logs) -> None:
    tenants = {f"t{n}": [str(i) for i in range(6)] for n in range(4)}
    paths = [f"/{t}/{i}" for t, ids in tenants.items() for i in ids]
    config = tmp_path / "status.yaml"
    write_config(config, upstream, tenants)
    env = environment(redis_url, prefix, config)
    first, second = start_prober(env, logs), start_prober(env, logs)
    try:
        wait_for(lambda: all(upstream.count(p) >= 1 for p in paths), timeout_s=15)
        time.sleep(2 * INTERVAL)
        assert all(upstream.count(p) >= 2 for p in paths)  # probed again within its interval
        assert closest_gap(upstream, paths) >= INTERVAL / 2  # never twice within an interval

        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed_at = time.monotonic()
        time.sleep(2 * INTERVAL + 0.5)
        late = [p for p in paths if not any(killed_at < t <= killed_at + 2 * INTERVAL for t in upstream.times[p])]
        assert late == []  # the survivor took over every integration within 2 intervals
        assert closest_gap(upstream, paths) >= INTERVAL / 2
        assert second.poll() is None
    finally:
        stop(first)
        stop(second)


def test_a_prober_whose_clock_runs_an_hour_ahead_neither_doubles_nor_strands_work(tmp_path, upstream, redis_url, prefix, logs) -> None:
    tenants = {"t0": [str(i) for i in range(6)]}
    paths = [f"/t0/{i}" for i in range(6)]
    config = tmp_path / "status.yaml"
    write_config(config, upstream, tenants)
    skew = tmp_path / "skew"  # the clock of the machine this prober runs on is an hour fast
    skew.mkdir()
    (skew / "sitecustomize.py").write_text("import time\n_real = time.time\ntime.time = lambda: _real() + 3600\n")
    env = environment(redis_url, prefix, config)
    honest = start_prober(env, logs)
    ahead = None
    try:
        wait_for(lambda: all(upstream.count(p) >= 1 for p in paths), timeout_s=15)
        # Joining now, it must not take the honest prober's claims and schedule for its own.
        ahead = start_prober({**env, "PYTHONPATH": str(skew)}, logs)
        time.sleep(3 * INTERVAL)
        assert closest_gap(upstream, paths) >= INTERVAL / 2  # never twice within an interval
        ahead.send_signal(signal.SIGKILL)
        ahead.wait(5)
        killed_at = time.monotonic()
        time.sleep(2 * INTERVAL + 2)
        # Whatever it held comes back within its lease, not an hour later.
        late = [p for p in paths if not any(t > killed_at + 1 for t in upstream.times[p])]
        assert late == []
    finally:
        stop(honest)
        if ahead is not None:
            stop(ahead)


def test_stale_shows_when_every_prober_is_stopped(tmp_path, upstream, redis_url, prefix, settings, logs) -> None:
    config = tmp_path / "status.yaml"
    write_config(config, upstream, {"acme": ["1", "2"]}, interval_seconds=1, stale_after_seconds=2)
    prober = start_prober(environment(redis_url, prefix, config), logs)
    client = create_app(settings).test_client()
    auth = {"Authorization": "Bearer acme-key"}

    def statuses():
        response = client.get("/status", headers=auth)
        return response.status_code == 200 and [(i["status"], i["reason"]) for i in response.get_json()["data"]["integrations"]]

    try:
        wait_for(lambda: statuses() == [("healthy", None)] * 2, timeout_s=15)
        assert client.get("/readyz").status_code == 200
    finally:
        stop(prober)
    ready = client.get("/readyz")  # still ready: this node answers /status truthfully
    assert ready.status_code == 200 and ready.get_json()["checks"]["prober"] == "no fresh prober heartbeat"
    assert wait_for(lambda: statuses() == [("unknown", "stale")] * 2, timeout_s=5)
    document = client.get("/status", headers=auth).get_json()
    assert document["status"] == "unhealthy" and document["data"]["healthy_integrations_count"] == 0


def test_sighup_reload_adds_removes_and_rekeys(tmp_path, upstream, redis_url, prefix, settings, store, logs) -> None:
    config = tmp_path / "status.yaml"
    write_config(config, upstream, {"acme": ["a", "b"], "gone": ["x"]})
    prober = start_prober(environment(redis_url, prefix, config), logs)
    client = create_app(settings).test_client()

    def ids(key: str):
        response = client.get("/status", headers={"Authorization": f"Bearer {key}"})
        return response.status_code == 200 and [i["id"] for i in response.get_json()["data"]["integrations"] if i["status"] == "healthy"]

    try:
        wait_for(lambda: ids("acme-key") == ["a", "b"], timeout_s=15)
        write_config(config, upstream, {"acme": ["a", "c"]}, keys={"acme": "acme-new-key"})
        prober.send_signal(signal.SIGHUP)
        reloaded_at = time.monotonic()
        wait_for(lambda: client.get("/status", headers={"Authorization": "Bearer acme-key"}).status_code == 401, timeout_s=5)
        assert wait_for(lambda: ids("acme-new-key") == ["a", "c"], timeout_s=INTERVAL + 2)
        assert time.monotonic() - reloaded_at < INTERVAL  # the added one was probed within an interval
        assert client.get("/status", headers={"Authorization": "Bearer gone-key"}).status_code == 401
        assert not store.client.hexists(store.results_key("acme"), "b")
        assert not store.client.exists(store.results_key("gone"), store.report_key("gone"), store.version_key("gone"))
        members = {m.decode() for m in store.client.zrange(store.due_key(), 0, -1)}
        assert members == {"acme\x1fa", "acme\x1fc"}
        assert prober.poll() is None
    finally:
        stop(prober)


def test_a_changed_file_is_reloaded_without_a_signal(tmp_path, upstream, store, make_prober) -> None:
    config = tmp_path / "status.yaml"
    write_config(config, upstream, {"acme": ["a"]})
    prober = make_prober(load(config, os.environ), source=config)
    run_round(prober)
    write_config(config, upstream, {"acme": ["a", "b"]}, timeout_seconds=0.6)  # a different size, surely
    run_round(prober)
    assert [i.id for i in prober.registry.integrations] == ["a", "b"]
    assert upstream.count("/acme/b") == 1


def test_an_invalid_reload_keeps_the_running_registry(tmp_path, upstream, make_prober, caplog) -> None:
    config = tmp_path / "status.yaml"
    write_config(config, upstream, {"acme": ["a"]})
    prober = make_prober(load(config, os.environ), source=config)
    config.write_text("tenants: [{id: acme, api_keys: [{sha256: nope}]}]")
    prober.reload_requested = True
    run_round(prober)
    assert [i.id for i in prober.registry.integrations] == ["a"]
    assert "tenants[0].api_keys[0].sha256: not a SHA-256 hex digest" in caplog.text


def test_a_changed_probe_header_alone_is_reloaded(tmp_path, upstream, make_prober) -> None:
    config = tmp_path / "status.yaml"
    write_config(config, upstream, {"acme": ["a"]})
    document = yaml.safe_load(config.read_text())
    document["tenants"][0]["integrations"][0]["probe"]["headers"] = {"Authorization": "Bearer ${TOKEN}"}
    config.write_text(yaml.safe_dump(document))
    environ = {"TOKEN": "old"}
    prober = make_prober(load(config, environ), source=config, environ=environ)
    run_round(prober)
    environ["TOKEN"] = "rotated"
    prober.reload_requested = True
    prober.tick()
    assert prober.registry.integrations[0].probe.headers == (("Authorization", "Bearer rotated"),)


def test_prober_options_change_only_on_restart(tmp_path, upstream, make_prober, caplog) -> None:
    config = tmp_path / "status.yaml"
    write_config(config, upstream, {"acme": ["a"]})
    prober = make_prober(load(config, os.environ), source=config)
    run_round(prober)
    document = yaml.safe_load(config.read_text())
    document["prober"]["concurrency"] = 3
    document["tenants"][0]["integrations"].append(integration("b", "MJ", upstream.url("/acme/b")))
    config.write_text(yaml.safe_dump(document))
    run_round(prober)
    assert prober.registry.prober.concurrency == 64  # the pool was sized at start
    assert [i.id for i in prober.registry.integrations] == ["a", "b"]  # the rest applies at once
    assert "take effect on restart" in caplog.text
