"""The config file: defaults, ${VAR} expansion, and every bad field named by its path."""
import subprocess
import sys
import time

import pytest
import yaml

from status_service.registry import ConfigError, load, parse, webhook_id
from status_service.webhooks import wanted
from tests.conftest import REPO

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def config(**overrides) -> dict:
    base = {
        "tenants": [
            {
                "id": "acme",
                "api_keys": [{"sha256": DIGEST}],
                "integrations": [{"id": "1", "type": "MJ", "probe": {"url": "https://provider.example/health"}}],
            }
        ]
    }
    base.update(overrides)
    return base


def problems(document: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(yaml.safe_dump(document), environ or {})
    return caught.value.problems


def bad_integration(**probe) -> dict:
    return config(tenants=[{"id": "acme", "integrations": [{"id": "1", "type": "MJ", "probe": {"url": "http://x.example/", **probe}}]}])


def test_issue_example_loads_with_every_name() -> None:
    text = """
probe:
  interval_seconds: 30
  timeout_seconds: 5
  failure_threshold: 2
  success_threshold: 1
tenants:
  - id: acme
    api_keys:
      - sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    integrations:
      - id: "1"
        type: MJ
        probe:
          url: https://provider.example/health
          method: GET
          headers: {Authorization: "Bearer ${ACME_MJ_TOKEN}"}
          expect_status: [200]
          expect_json: {status.indicator: none}
          timeout_seconds: 3
          interval_seconds: 60
"""
    reg = parse(text, {"ACME_MJ_TOKEN": "s3cret"})
    (i,) = reg.integrations
    assert (i.tenant_id, i.id, i.type) == ("acme", "1", "MJ")
    assert i.probe.headers == (("Authorization", "Bearer s3cret"),)
    assert i.probe.expect_status == (200,)
    assert i.probe.expect_json == (("status.indicator", "none"),)
    assert (i.probe.timeout_s, i.probe.interval_s, i.probe.stale_after_s) == (3.0, 60.0, 180.0)
    assert (i.probe.failure_threshold, i.probe.success_threshold) == (2, 1)
    assert reg.tenants[0].key_digests == (DIGEST,)
    assert "s3cret" not in repr(reg)


def test_defaults_apply_when_the_file_is_silent() -> None:
    (i,) = parse(yaml.safe_dump(config()), {}).integrations
    assert (i.probe.method, i.probe.expect_status, i.probe.timeout_s, i.probe.interval_s) == ("GET", (), 5.0, 30.0)
    assert (i.probe.failure_threshold, i.probe.success_threshold, i.probe.stale_after_s) == (2, 1, 90.0)


def test_integer_ids_read_as_strings() -> None:
    doc = config()
    doc["tenants"][0]["integrations"][0]["id"] = 7
    assert parse(yaml.safe_dump(doc), {}).integrations[0].id == "7"


def test_uppercase_digests_are_normalised() -> None:
    doc = config()
    doc["tenants"][0]["api_keys"][0]["sha256"] = DIGEST.upper()
    assert parse(yaml.safe_dump(doc), {}).tenants[0].key_digests == (DIGEST,)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (config(tenants=[{"id": "acme", "api_keys": [{"sha256": "abc"}]}]), "tenants[0].api_keys[0].sha256: not a SHA-256 hex digest"),
        (config(probe={"interval_seconds": 0}), "probe.interval_seconds: must be greater than or equal to 1"),
        (config(probe={"timeout_seconds": "5"}), "probe.timeout_seconds: not a number"),
        (config(probe={"failure_threshold": 1.5}), "probe.failure_threshold: not a whole number"),
        (config(probe={"success_threshold": True}), "probe.success_threshold: not a whole number"),
        (config(probe={"intervall": 3}), "probe.intervall: unknown field"),
        (config(prober={"concurrency": 0}), "prober.concurrency: must be greater than or equal to 1"),
        (config(history={"raw_hours": 0}), "history.raw_hours: must be greater than or equal to 1"),
        (config(history={"enabled": "yes"}), "history.enabled: must be true or false"),
        (config(history={"five_minute_days": 1, "raw_hours": 48}), "history.five_minute_days: must be at least raw_hours / 24"),
        (config(history={"hourly_days": 7}), "history.hourly_days: must be at least five_minute_days"),
        (config(history={"compact_every_seconds": 0}), "history.compact_every_seconds: must be greater than or equal to 1"),
        (config(history={"keep": 3}), "history.keep: unknown field"),
        ({"probe": {}}, "tenants: missing data for required field"),
        (config(tenants="acme"), "tenants: not a valid list"),
        (config(tenants=[{"id": "a b"}]), "tenants[0].id: must be 1-64 characters"),
        (config(tenants=[{"api_keys": []}]), "tenants[0].id: missing data for required field"),
        (config(tenants=[{"id": "a"}, {"id": "a"}]), "tenants[1].id: duplicate tenant id 'a'"),
        (config(tenants=[{"id": "a", "api_keys": [{"sha256": DIGEST}]}, {"id": "b", "api_keys": [{"sha256": DIGEST}]}]),
         "tenants[1].api_keys[0].sha256: already a key of tenants[0]"),
        (bad_integration(url="ftp://x.example/"), "tenants[0].integrations[0].probe.url: not a valid URL"),
        (bad_integration(method="FETCH"), "tenants[0].integrations[0].probe.method: must be one of"),
        (bad_integration(expect_status=[200, 99]), "tenants[0].integrations[0].probe.expect_status[1]: must be greater than or equal to 100"),
        (bad_integration(expect_status=[]), "tenants[0].integrations[0].probe.expect_status: shorter than minimum length 1"),
        (bad_integration(expect_json={"a": [1]}), "tenants[0].integrations[0].probe.expect_json.a.value: must be a string, number, boolean or null"),
        (bad_integration(headers={"X": 1}), "tenants[0].integrations[0].probe.headers.X.value: not a valid string"),
        (bad_integration(headers={"X Y": "v"}), "tenants[0].integrations[0].probe.headers.X Y.key: not a valid HTTP header name"),
        (bad_integration(headers={"X": "a\r\nInjected: 1"}), "tenants[0].integrations[0].probe.headers.X.value: not a valid HTTP header value"),
        (bad_integration(interval_seconds=60, stale_after_seconds=30),
         "tenants[0].integrations[0].probe.stale_after_seconds: must exceed interval_seconds + timeout_seconds (65)"),
        (bad_integration(interval_seconds=60, timeout_seconds=5, stale_after_seconds=65),
         "tenants[0].integrations[0].probe.stale_after_seconds: must exceed interval_seconds + timeout_seconds (65)"),
        (config(probe={"interval_seconds": 10, "stale_after_seconds": 12}),
         "probe.stale_after_seconds: must exceed interval_seconds + timeout_seconds (15)"),
        (bad_integration(timeout_seconds=0), "tenants[0].integrations[0].probe.timeout_seconds: must be greater than or equal to 0.05"),
        (config(tenants=[{"id": "a", "integrations": [{"id": "1", "type": "MJ"}]}]), "tenants[0].integrations[0].probe: give either check (a built-in provider check) or probe"),
        (config(tenants=[{"id": "a", "integrations": [{"id": "1", "type": "", "probe": {"url": "http://x.example/"}}]}]),
         "tenants[0].integrations[0].type: length must be between 1 and 64"),
        (config(tenants=[{"id": "a", "integrations": [
            {"id": "1", "type": "MJ", "probe": {"url": "http://x.example/"}},
            {"id": "1", "type": "MJ", "probe": {"url": "http://x.example/"}}]}]),
         "tenants[0].integrations[1].id: duplicate integration id '1'"),
    ],
)
def test_every_bad_field_is_named(document: dict, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(document)), problems(document)


def test_all_problems_are_reported_at_once() -> None:
    found = problems(config(probe={"interval_seconds": 0, "timeout_seconds": -1}))
    assert len(found) == 2


def test_unset_variable_is_named_with_its_place() -> None:
    assert problems(bad_integration(headers={"Authorization": "Bearer ${ACME_MJ_TOKEN}"})) == [
        "tenants[0].integrations[0].probe.headers.Authorization: environment variable ACME_MJ_TOKEN is not set"
    ]


def test_variables_expand_anywhere_in_strings() -> None:
    doc = bad_integration(url="https://${HOST}/v1/health")
    assert parse(yaml.safe_dump(doc), {"HOST": "api.example"}).integrations[0].probe.url == "https://api.example/v1/health"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenants: [", "line 2 column 1: did not find expected node content"),
        ("- just\n- a list\n", "the file must be a mapping"),
        ("", "the file must be a mapping"),
        ("loop: &a [*a]\ntenants: []", "loop[0]: YAML anchors and aliases are not allowed"),
        ("tenants: []\nx: " + "[" * 5000 + "]" * 5000, "line 2 column"),
        ("tenants: []\n\tbad: tab", "line 2 column 1: found character that cannot start any token"),
    ],
)
def test_unreadable_yaml_is_one_clear_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, {}, "cfg.yaml")
    assert str(caught.value).startswith("cfg.yaml: invalid config: " + expected)


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.yaml", {})
    assert "nope.yaml: invalid config: cannot read: FileNotFoundError" in str(caught.value)


def test_shipped_configs_are_valid() -> None:
    assert parse((REPO / "config/status.yaml").read_text(), {}).tenants[0].id == "demo"
    example = parse((REPO / "config/status.example.yaml").read_text(),
                    {"ACME_MJ_TOKEN": "t", "ACME_WEBHOOK_SECRET": "s" * 32, "ACME_OPENAI_KEY": "k"})
    assert example.integrations[0].probe.interval_s == 60
    hook = example.tenants[0].webhooks[0]
    assert (hook.url, hook.secret, hook.guarded) == ("https://hooks.example.com/status", "s" * 32, False)
    assert hook.id.startswith("file-") and hook.id == webhook_id(hook.url)  # its URL's: reordering the list moves nothing
    assert wanted(hook.events, hook.categories, "status.changed", {}) and not wanted(hook.events, hook.categories, "type.changed", {})
    assert example.alerts.first_retry_s == 5 and example.alerts.retry_s == 24 * 3600
    dalle = example.integrations[1].probe
    assert (dalle.provider, dalle.url, dict(dalle.headers)["Authorization"], dalle.low_balance) == (
        "openai", "https://api.openai.com/v1/models", "Bearer k", 20)


@pytest.mark.parametrize("hooks, where", [
    ([{"url": "https://x.example/h"}], "tenants[0].webhooks[0].secret"),
    ([{"url": "https://x.example/h", "secret": "short"}], "tenants[0].webhooks[0].secret"),
    ([{"url": "ftp://x.example/h", "secret": "s" * 16}], "tenants[0].webhooks[0].url"),
    ([{"url": "https://x.example/h", "secret": "s" * 16, "events": ["nope"]}], "tenants[0].webhooks[0].events[0]"),
    ([{"id": "a", "url": "https://x.example/h", "secret": "s" * 16}, {"id": "a", "url": "https://x.example/i", "secret": "s" * 16}],
     "tenants[0].webhooks[1].id"),
    ([{"url": "https://x.example/h", "secret": "s" * 16}, {"url": "https://x.example/h", "secret": "t" * 16}],
     "tenants[0].webhooks[1].id"),
])
def test_bad_webhooks_in_the_file_are_named(hooks, where) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(yaml.safe_dump(config(tenants=[{"id": "acme", "webhooks": hooks}])), {})
    assert any(p.startswith(where) for p in caught.value.problems), caught.value.problems


def test_prober_with_invalid_config_exits_with_one_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config(tenants=[{"id": "acme", "api_keys": [{"sha256": "zz"}]}], probe={"interval_seconds": 0})))
    run = subprocess.run(
        [sys.executable, "-m", "status_service.prober"],
        env={"STATUS_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "tenants[0].api_keys[0].sha256: not a SHA-256 hex digest" in lines[0]
    assert "probe.interval_seconds" in lines[0]


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        parse("\n".join(lines) + "\ntenants: []\n", {}, "cfg.yaml")
    assert "a1[0]: YAML anchors and aliases are not allowed" in str(caught.value)
    assert time.monotonic() - started < 1  # 9^10 nodes if expanded


def test_an_aliased_probe_block_is_refused() -> None:
    text = """
shared: &p {url: "http://x.example/"}
tenants:
  - id: acme
    integrations:
      - {id: "1", type: MJ, probe: *p}
"""
    with pytest.raises(ConfigError) as caught:
        parse(text, {}, "cfg.yaml")
    assert "tenants[0].integrations[0].probe: YAML anchors and aliases are not allowed" in str(caught.value)


def test_an_explicit_stale_after_above_interval_plus_timeout_loads() -> None:
    reg = parse(yaml.safe_dump(bad_integration(interval_seconds=60, timeout_seconds=5, stale_after_seconds=66)), {})
    assert reg.integrations[0].probe.stale_after_s == 66.0


def test_webhooks_need_the_history_that_feeds_them() -> None:
    document = config(tenants=[{"id": "acme", "webhooks": [{"url": "https://x.example/h", "secret": "s" * 16}]}], history={"enabled": False})
    with pytest.raises(ConfigError) as caught:
        parse(yaml.safe_dump(document), {})
    assert caught.value.problems[0].startswith("history.enabled: webhooks are sent from the events")
