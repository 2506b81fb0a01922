"""The command line (`flask --app wsgi ...`), through Flask's CliRunner and once as a real process."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from status_service import create_app
from status_service.settings import Settings
from tests.conftest import REPO, TEST_SECRET_KEY, environment, integration, key_digest, run_round, tenant

SECRET_VALUE = "sk-live-never-echo-this-0123456789"


@pytest.fixture
def config_file(tmp_path, upstream):
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump({"generation": 3, "tenants": [
        tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj")),
                                      integration("2", "DALL-E", upstream.url("/dalle", status=503))]),
        tenant("globex", ["globex-key"], [integration("g1", "Runway", upstream.url("/runway"))]),
    ]}))
    return path


@pytest.fixture
def app(redis_url, prefix, config_file):
    made = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0,
                               config_path=str(config_file)))
    yield made
    made.extensions["status_web"].close()


def run(app, *args: str):
    """Run a command through Flask's CliRunner (Click 8.2: stdout and stderr kept apart)."""
    return app.test_cli_runner().invoke(args=list(args))


def test_config_check_names_every_error_and_never_a_value(app, tmp_path) -> None:
    assert run(app, "config", "check").exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tenants": [{"id": "acme", "integrations": [
        {"id": "1", "type": "MJ", "probe": {"url": "not a url", "headers": {"Authorization": SECRET_VALUE + "\n"},
                                            "interval_seconds": 0}}]}]}))
    result = run(app, "config", "check", str(bad))
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert any("tenants[0].integrations[0].probe.url" in e for e in errors)
    assert any("tenants[0].integrations[0].probe.interval_seconds" in e for e in errors)
    assert any("tenants[0].integrations[0].probe.headers" in e for e in errors)
    assert SECRET_VALUE not in result.stdout + result.stderr
    assert run(app, "config", "check", str(tmp_path / "missing.yaml")).exit_code == 1


def test_keys_are_made_once_and_revoked(app) -> None:
    assert run(app, "registry", "sync").exit_code == 0
    made = run(app, "keys", "create", "--tenant", "acme")
    assert made.exit_code == 0, made.stderr
    key_id = made.stdout.split("id:")[1].split()[0]
    key = made.stdout.split("key:")[1].split()[0]
    assert key.startswith("sst_")
    client = app.test_client()
    assert client.get("/status", headers={"Authorization": f"Bearer {key}"}).status_code in (200, 503)  # 503: no report yet
    assert run(app, "keys", "revoke", "--tenant", "acme", key_id).exit_code == 0
    assert client.get("/status", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert run(app, "keys", "revoke", "--tenant", "acme", key_id).exit_code == 1
    missing = run(app, "keys", "create", "--tenant", "nobody")
    assert missing.exit_code == 1 and "no tenant nobody" in missing.stderr
    assert run(app, "keys", "create", "--tenant", "bad id!").exit_code == 1


def test_probe_once_prints_a_table_and_writes_nothing_unless_asked(app, store, upstream) -> None:
    result = run(app, "probe", "--once", "--tenant", "acme")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["tenant", "id", "type", "status", "reason", "ms"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["1"][3] == "healthy" and rows["2"][3:5] == ["unhealthy", "http_503"] and "g1" not in rows
    assert upstream.count("/mj") == 1
    assert not list(store.client.scan_iter(f"{store.prefix}*"))  # nothing written: not even the registry
    unsynced = run(app, "probe", "--once", "--tenant", "acme", "--record")
    assert unsynced.exit_code == 1 and "registry sync" in unsynced.stderr  # it never seeds from part of the file
    assert run(app, "registry", "sync").exit_code == 0
    runway_before = upstream.count("/runway")
    recorded = run(app, "probe", "--once", "--tenant", "acme", "--record")
    assert recorded.exit_code == 0, recorded.stderr
    rows = {line.split()[1]: line.split() for line in recorded.stdout.splitlines()[1:]}
    assert rows["1"][3] == "healthy" and rows["2"][3:5] == ["unhealthy", "http_503"]
    assert store.client.hget(store.results_key("acme"), "2") is not None
    # Another tenant's integrations, due as well, are neither probed nor recorded by it.
    assert upstream.count("/runway") == runway_before and store.client.hget(store.results_key("globex"), "g1") is None
    assert not store.client.zrangebyscore(store.probers_key(), "-inf", "+inf")  # no heartbeat left behind
    assert run(app, "probe").exit_code != 0  # --once is required


def test_status_prints_what_the_endpoint_says(app, config_file, make_prober) -> None:
    from status_service.registry import load

    run_round(make_prober(load(config_file, {})))
    printed = run(app, "status", "--tenant", "acme")
    assert printed.exit_code == 0, printed.stderr
    served = app.test_client().get("/status", headers={"Authorization": "Bearer acme-key"}).get_json()
    assert json.loads(printed.stdout) == served
    assert run(app, "status", "--tenant", "nobody").exit_code == 1


def test_registry_sync_keeps_the_generation_rule(app, store, config_file, tmp_path, redis_url, prefix) -> None:
    synced = run(app, "registry", "sync")
    assert synced.exit_code == 0 and "generation 3" in synced.stdout
    older = tmp_path / "older.yaml"
    older.write_text(yaml.safe_dump({"generation": 2, "tenants": [tenant("acme", ["acme-key"], [])]}))
    stale_app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0,
                                    config_path=str(older)))
    refused = run(stale_app, "registry", "sync")
    assert refused.exit_code == 1 and "generation 3" in refused.stderr
    assert store.seeded_generation() == 3


def test_each_command_has_help_and_runs_as_a_real_process(redis_url, prefix, config_file, tmp_path) -> None:
    env = environment(redis_url, prefix, config_file)
    for command in (["keys", "create"], ["keys", "revoke"], ["config", "check"], ["probe"], ["status"], ["registry", "sync"]):
        shown = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *command, "--help"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "Usage:" in shown.stdout, (command, shown.stderr)
    ok = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "config", "check"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: [{id: acme, api_keys: [{sha256: " + key_digest("x")[:10] + "}]}]")
    failed = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "config", "check", str(bad)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "tenants[0].api_keys[0].sha256" in failed.stderr and "Traceback" not in failed.stderr
