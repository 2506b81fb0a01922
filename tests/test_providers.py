"""Built-in provider checks against local fakes that answer as each provider's documentation says."""
from __future__ import annotations

import json
import logging
import math
import time
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from dataclasses import replace

from status_service import checks, create_app, report, webhooks
from status_service.fetch import Fetcher
from status_service.model import Health, Integration, Outcome, State
from status_service.providers import PROVIDERS, retry_after
from status_service.registry import ConfigError, load, provider_options, spec_of
from status_service.settings import Settings
from status_service.store.history import History
from status_service.store.providers import Providers
from tests.conftest import TEST_SECRET_KEY, key_digest, make_registry, report_of, run_round, wait_for
from tests.test_prober import Clock

KEY = "sk-test-0123456789"
OPENAI_429 = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}

# provider, credentials, the path it asks, (status, body, headers) the fake answers, the reason and balance expected.
CASES = [
    ("openai", {"api_key": KEY}, "/v1/models", (200, {"object": "list", "data": []}, {}), None, None),
    ("openai", {"api_key": KEY}, "/v1/models", (401, {"error": {"code": "invalid_api_key", "type": "invalid_request_error"}}, {}),
     "invalid_credentials", None),
    ("openai", {"api_key": KEY}, "/v1/models", (403, {"error": {"code": "unsupported_country_region_territory"}}, {}), "forbidden", None),
    ("openai", {"api_key": KEY}, "/v1/models", (429, OPENAI_429, {}), "quota_exhausted", None),
    ("openai", {"api_key": KEY}, "/v1/models", (429, {"error": {"type": "requests", "code": "billing_hard_limit_reached"}}, {}),
     "quota_exhausted", None),
    ("openai", {"api_key": KEY}, "/v1/models", (429, {"error": {"type": "requests", "code": "project_spend_limit_exceeded"}}, {}),
     "quota_exhausted", None),
    ("openai", {"api_key": KEY}, "/v1/models", (429, {"error": {"type": "requests", "code": "rate_limit_exceeded"}}, {}), "rate_limited", None),
    ("openai", {"api_key": KEY}, "/v1/models", (503, {"error": {"message": "overloaded"}}, {}), "provider_error", None),
    ("openai", {"api_key": KEY}, "/v1/models", (400, {"error": {"type": "invalid_request_error", "code": "billing_hard_limit_reached"}}, {}),
     "quota_exhausted", None),
    ("discord", {"token": KEY}, "/api/v10/users/@me", (403, {"code": 40333, "message": "internal network error"}, {}),
     "address_blocked", None),
    ("discord", {"token": KEY}, "/api/v10/users/@me", (200, {"id": "1", "username": "bot"}, {}), None, None),
    ("discord", {"token": KEY, "token_type": "user"}, "/api/v10/users/@me", (401, {"message": "401: Unauthorized", "code": 0}, {}),
     "invalid_credentials", None),
    ("discord", {"token": KEY}, "/api/v10/users/@me", (429, {"message": "You are being rate limited.", "retry_after": 1.5, "global": False},
                                                       {"Retry-After": "2"}), "rate_limited", None),
    ("runway", {"api_key": KEY}, "/v1/organization", (200, {"creditBalance": 1200, "tier": {"maxMonthlyCreditSpend": 5000}}, {}), None, 1200.0),
    ("runway", {"api_key": KEY}, "/v1/organization", (200, {"creditBalance": 0}, {}), "quota_exhausted", 0.0),
    ("runway", {"api_key": KEY}, "/v1/organization", (401, {"error": "Invalid API key"}, {}), "invalid_credentials", None),
    ("runway", {"api_key": KEY}, "/v1/organization", (429, {"error": "Too many requests"}, {}), "rate_limited", None),
    ("runway", {"api_key": KEY}, "/v1/organization", (502, {"error": "Bad gateway"}, {}), "provider_error", None),
    ("stability", {"api_key": KEY}, "/v1/user/balance", (200, {"credits": 5.5}, {}), None, 5.5),
    ("stability", {"api_key": KEY}, "/v1/user/balance", (200, {"credits": 0}, {}), "quota_exhausted", 0.0),
    ("stability", {"api_key": KEY}, "/v1/user/balance", (401, {"id": "x", "name": "unauthorized", "message": "bad key"}, {}),
     "invalid_credentials", None),
    ("stability", {"api_key": KEY}, "/v1/user/balance", (429, {"name": "rate_limit_exceeded"}, {}), "rate_limited", None),
    ("replicate", {"api_token": KEY}, "/v1/account", (200, {"type": "user", "username": "acme", "name": "Acme"}, {}), None, None),
    ("replicate", {"api_token": KEY}, "/v1/account", (401, {"title": "Unauthenticated", "detail": "You did not pass a valid token"}, {}),
     "invalid_credentials", None),
    ("replicate", {"api_token": KEY}, "/v1/account", (402, {"title": "Payment required"}, {}), "quota_exhausted", None),
    ("replicate", {"api_token": KEY}, "/v1/account", (429, {"detail": "Request was throttled. Your rate limit resets in ~30s."}, {}), "rate_limited", None),
    ("ideogram", {"api_key": KEY}, "/v2/image/generate/ideogram-4-5", (200, {"object": "price_quote", "billing_identifier": "ideogram_4_5_generate", "quantity": 1,
                                                            "usd_micros": 60000, "credit_millis": 6000, "qualifier": "exact"}, {}), None, None),
    ("ideogram", {"api_key": KEY}, "/v2/image/generate/ideogram-4-5", (401, {"detail": "Unauthorized"}, {}), "invalid_credentials", None),
    ("ideogram", {"api_key": KEY}, "/v2/image/generate/ideogram-4-5", (402, {"reject_reason": "insufficient_funds"}, {}), "quota_exhausted", None),
]


def _check(provider: str, credentials: dict, **more) -> dict:
    return {"provider": provider, "credentials": credentials, **more}


@pytest.mark.parametrize("n", range(len(CASES)), ids=[f"{c[0]}-{c[3][0]}-{c[4]}" for c in CASES])
def test_each_provider_maps_each_documented_answer(upstream, n: int) -> None:
    provider, credentials, path, (status, body, headers), reason, balance = CASES[n]
    base = f"{upstream.base}/case{n}"  # a base URL of its own: the fake answers this case at its path
    upstream.url(f"/case{n}{path}", status=status, body=json.dumps(body).encode(), headers=headers)
    spec = spec_of({"check": _check(provider, credentials)}, provider_options({provider: {"base_url": base}}))
    fetcher = Fetcher()
    try:
        outcome = fetcher.probe(spec)
    finally:
        fetcher.close()
    assert (outcome.ok, outcome.reason, outcome.balance) == (reason is None, reason, balance)
    sent = upstream.headers[f"/case{n}{path}"]
    assert KEY in " ".join(sent.values())  # the credential went, in the provider's own header
    if status == 429:  # how long it asked us to wait: a header first, else the body's retry_after, or Replicate's detail
        assert outcome.retry_after_s == {"discord": 2.0, "replicate": 30.0}.get(provider)


def test_each_provider_is_asked_as_its_documentation_says(upstream) -> None:
    expected = {
        "openai": ("/v1/models", "Authorization", f"Bearer {KEY}"),
        "discord": ("/api/v10/users/@me", "Authorization", f"Bot {KEY}"),
        "runway": ("/v1/organization", "X-Runway-Version", "2024-11-06"),
        "stability": ("/v1/user/balance", "Authorization", f"Bearer {KEY}"),
        "replicate": ("/v1/account", "Authorization", f"Bearer {KEY}"),
        "ideogram": ("/v2/image/generate/ideogram-4-5", "Api-Key", KEY),
    }
    fetcher = Fetcher()
    try:
        for provider, (path, header, value) in expected.items():
            upstream.url(f"/{provider}{path}", body=b"{}")
            key = "api_token" if provider == "replicate" else "token" if provider == "discord" else "api_key"
            spec = spec_of({"check": _check(provider, {key: KEY})}, provider_options({provider: {"base_url": f"{upstream.base}/{provider}"}}))
            assert fetcher.probe(spec).ok, provider
            assert upstream.headers[f"/{provider}{path}"][header] == value, provider
    finally:
        fetcher.close()
    user = spec_of({"check": _check("discord", {"token": KEY, "token_type": "user"})}, provider_options({}))
    assert dict(user.headers)["Authorization"] == KEY and user.url == "https://discord.com/api/v10/users/@me"


def _registry(upstream, *integrations, providers=None, **extra):
    return make_registry([{"id": "acme", "api_keys": [{"sha256": key_digest("acme-key")}], "integrations": list(integrations)}],
                         providers=providers or {name: local(upstream, name) for name in ("openai", "runway")}, **extra)


def local(upstream, name: str, **more) -> dict:
    """Return a provider's settings pointing its API and its status page at the local fake: nothing reaches the internet."""
    return {"base_url": f"{upstream.base}/{name}", "status_page": f"{upstream.base}/{name}-page", **more}


def test_a_customer_sees_within_one_round_whether_the_key_works_and_why_not(upstream, make_prober, store, redis_url, prefix) -> None:
    upstream.url("/openai/v1/models", status=429, body=json.dumps(OPENAI_429).encode())
    upstream.url("/runway/v1/organization", body=b'{"creditBalance": 40}')
    reg = _registry(upstream, {"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": KEY})},
                    {"id": "gen3", "type": "Runway", "check": _check("runway", {"api_key": KEY}, low_balance=50)})
    run_round(make_prober(reg))
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    rows = {r["id"]: r for r in web.get("/status", headers={"Authorization": "Bearer acme-key"}).get_json()["data"]["integrations"]}
    assert rows["dalle"]["status"] == "unhealthy" and rows["dalle"]["reason"] == "quota_exhausted"
    assert rows["dalle"]["reason_category"] == "account" and "balance" not in rows["dalle"]
    # Under its low_balance: still healthy (the key works), with a hint that says why it may not for long.
    assert (rows["gen3"]["status"], rows["gen3"]["reason"], rows["gen3"]["reason_category"], rows["gen3"]["balance"]) == \
        ("healthy", "low_balance", "account", 40.0)
    assert KEY not in json.dumps(report_of(store, "acme"))


def test_after_invalid_credentials_the_check_backs_off_ten_intervals_and_stays_fresh(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", status=401, body=b'{"error": {"code": "invalid_api_key"}}')
    clock = Clock()
    reg = _registry(upstream, {"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": KEY}, interval_seconds=10)})
    prober = make_prober(reg, clock=clock)
    run_round(prober)
    for _ in range(9):  # nine intervals: no probe
        clock.now += 10.5
        run_round(prober)
    assert upstream.count("/openai/v1/models") == 1
    clock.now += 10.5 * 2
    run_round(prober)
    assert upstream.count("/openai/v1/models") == 2
    # Its refused state stays fresh as long as the backoff (stale_after: 3 intervals, stretched tenfold).
    integration = reg.integration(reg.integrations[0].member)
    state = State(Health.UNHEALTHY, 1000.0, "invalid_credentials")
    assert report.row(integration, state, 1000.0 + 250)["reason"] == "invalid_credentials"
    assert report.row(integration, state, 1000.0 + 301)["reason"] == "stale"
    # A generic probe's 401 is no reason to wait: it is not known to be a credential.
    assert report.row(Integration("acme", "p", "MJ", spec_of({"probe": {"url": "http://x"}}, ())), State(
        Health.UNHEALTHY, 1000.0, "invalid_credentials"), 1000.0 + 91)["reason"] == "stale"


def test_retry_after_is_honoured_before_the_next_probe(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", status=429, body=b'{"error": {"code": "rate_limit_exceeded"}}', headers={"Retry-After": "120"})
    clock = Clock()
    reg = _registry(upstream, {"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": KEY}, interval_seconds=10)})
    prober = make_prober(reg, clock=clock)
    run_round(prober)
    due = store.client.zscore(store.due_key(), reg.integrations[0].member) / 1000
    assert due >= clock.now + 119
    clock.now += 60
    run_round(prober)
    assert upstream.count("/openai/v1/models") == 1


def test_credentials_never_reach_a_log(upstream, make_prober, store, caplog) -> None:
    upstream.url("/openai/v1/models", status=401, body=b"{}")
    reg = _registry(upstream, {"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": KEY})})
    with caplog.at_level(logging.DEBUG):
        run_round(make_prober(reg))
    assert "invalid_credentials" in caplog.text and KEY not in caplog.text
    assert KEY not in repr(reg)


@pytest.mark.parametrize("integration,where", [
    ({"id": "1", "type": "X", "check": _check("openai", {"api_key": KEY}), "probe": {"url": "https://x.test"}}, "integrations[0].check"),
    ({"id": "1", "type": "X"}, "integrations[0].probe"),
    ({"id": "1", "type": "X", "check": _check("nobody", {"api_key": KEY})}, "integrations[0].check.provider"),
    ({"id": "1", "type": "X", "check": _check("openai", {})}, "integrations[0].check.credentials.api_key"),
    ({"id": "1", "type": "X", "check": _check("openai", {"api_key": KEY, "org": "x"})}, "integrations[0].check.credentials.org"),
    ({"id": "1", "type": "X", "check": _check("discord", {"token": KEY, "token_type": "robot"})}, "integrations[0].check.credentials.token_type"),
    ({"id": "1", "type": "X", "check": _check("openai", {"api_key": "sk\r\nX-Evil: 1"})}, "integrations[0].check.credentials.api_key"),
    ({"id": "1", "type": "X", "check": _check("openai", {"api_key": KEY}, low_balance=-1)}, "integrations[0].check.low_balance"),
])
def test_a_bad_check_in_the_config_file_is_named(integration, where) -> None:
    with pytest.raises(ConfigError) as raised:
        make_registry([{"id": "acme", "integrations": [integration]}])
    assert any(p.startswith(f"tenants[0].{where}") for p in raised.value.problems), raised.value.problems
    assert KEY not in str(raised.value)


def test_a_bad_providers_section_is_named() -> None:
    with pytest.raises(ConfigError) as raised:
        make_registry([], providers={"nobody": {}, "openai": {"base_url": "ftp://x", "max_requests_per_second": 0}})
    assert sorted(p.partition(":")[0] for p in raised.value.problems) == [
        "providers.nobody", "providers.openai.base_url", "providers.openai.max_requests_per_second"]


def test_a_check_made_through_the_admin_api_is_sealed_masked_and_probed_where_the_file_says(upstream, make_prober, store, redis_url,
                                                                                             prefix) -> None:
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    reg = _registry(upstream, admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    from status_service.cipher import from_settings
    prober = make_prober(reg, cipher=from_settings(TEST_SECRET_KEY, True, None))
    run_round(prober)
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    admin = {"Authorization": "Bearer admin-secret"}
    assert web.post("/admin/tenants", json={"id": "api"}, headers=admin).status_code == 201
    body = {"type": "DALL-E", "check": _check("openai", {"api_key": KEY})}
    made = web.put("/admin/tenants/api/integrations/dalle", json=body, headers=admin)
    assert made.status_code == 201 and made.get_json()["check"]["credentials"] == {"api_key": "***"}
    assert KEY not in made.get_data(as_text=True) and KEY not in web.get("/admin/tenants/api/integrations", headers=admin).get_data(as_text=True)
    assert web.put("/admin/tenants/api/integrations/dalle", json=body, headers=admin).status_code == 200  # the same again: no change
    from tests.test_admin import every_value
    assert KEY.encode() not in every_value(store)  # sealed at rest
    refused = web.put("/admin/tenants/api/integrations/x", json={"type": "X", "check": _check("openai", {"key": KEY})}, headers=admin)
    assert refused.status_code == 400 and set(refused.get_json()["fields"]) == {"check.credentials.key", "check.credentials.api_key"}
    both = web.put("/admin/tenants/api/integrations/x", json={**body, "probe": {"url": "https://example.com"}}, headers=admin)
    assert both.status_code == 400 and "check" in both.get_json()["fields"]
    run_round(prober)
    assert upstream.count("/openai/v1/models") == 1
    assert upstream.headers["/openai/v1/models"]["Authorization"] == f"Bearer {KEY}"


def test_a_providers_requests_are_capped_across_every_tenant_and_prober(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    clock = Clock()
    tenants = [{"id": f"t{n}", "integrations": [{"id": str(i), "type": "DALL-E", "check": _check("openai", {"api_key": f"k{n}-{i}"})}
                                                for i in range(10)]} for n in range(3)]
    reg = make_registry(tenants, providers={"openai": local(upstream, "openai", max_requests_per_second=5)},
                        prober={"concurrency": 64})
    first, second = make_prober(reg, clock=clock), make_prober(reg, clock=clock)
    run_round(first)
    run_round(second)  # the same second: the budget is the fleet's, not each prober's
    assert upstream.count("/openai/v1/models") == 5
    for expected in (10, 15, 20, 25, 30):
        clock.now += 1.0
        run_round(first)
        run_round(second)
        assert upstream.count("/openai/v1/models") == expected
    clock.now += 1.0
    run_round(first)
    assert upstream.count("/openai/v1/models") == 30  # each probed once: what waited was not probed twice



@pytest.fixture
def openai_fake():
    """A fake OpenAI on 127.0.0.1 whose answer depends on the key it is sent: `failing` keys get `status`, others 200."""
    state = {"failing": set(), "status": 503, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            state["hits"] += 1
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            status = state["status"] if key in state["failing"] else 200
            body = json.dumps({"error": {"code": "invalid_api_key"}} if status == 401 else {"data": []}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, suspected", [(503, True), (401, False)])
def test_a_fleet_wide_outage_is_one_suspected_incident_and_a_wave_of_bad_keys_is_none(openai_fake, make_prober, store, status,
                                                                                     suspected) -> None:
    openai_fake["status"], openai_fake["failing"] = status, {f"sk-{n}" for n in range(8)}
    tenants = [{"id": f"t{n}", "api_keys": [{"sha256": key_digest(f"key{n}")}],
                "integrations": [{"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": f"sk-{n}"})},
                                 {"id": "mj", "type": "MJ", "probe": {"url": openai_fake["base"] + "/mj"}}]} for n in range(10)]
    reg = make_registry(tenants, providers={"openai": {"base_url": openai_fake["base"], "status_page": openai_fake["base"] + "/page"}},
                        probe={"failure_threshold": 1})
    probers = [make_prober(reg), make_prober(reg)]  # two probers, each recording some of the results
    for prober in probers:
        run_round(prober)
    for prober in probers:  # the next reports carry what the fleet suspects
        prober.incidents.checked_at = 0
        prober.tick()
        store.client.zadd(store.due_key(), {i.member: 0 for i in reg.integrations})
        run_round(prober)
    incidents = [(t.id, e.body) for t in reg.tenants for e in History(store).events(t.id, None, 100) if e.body["scope"] == "provider"]
    for n in range(10):
        document = report_of(store, f"t{n}")
        stats, rows = document["data"]["stats_by_integration_type"], {r["id"]: r for r in document["data"]["integrations"]}
        if suspected:  # every tenant of the provider sees it, healthy or not, and its failure is the provider's
            assert stats["DALL-E"]["provider_status"]["suspected"] is True and "provider_status" not in stats["MJ"]
            assert rows["dalle"]["reason_category"] == ("provider" if n < 8 else None)
        else:
            assert "provider_status" not in stats["DALL-E"] and rows["dalle"]["reason_category"] == ("credentials" if n < 8 else None)
    if suspected:  # one event per tenant of the provider, for the whole fleet: not one per integration or per prober
        assert sorted(t for t, _ in incidents) == sorted(f"t{n}" for n in range(10))
        assert all(webhooks.event_type(body) == "provider.incident" and body["provider"] == "openai" for _, body in incidents)
    else:
        assert incidents == []


def test_a_suspected_incident_ends_one_window_after_its_last_failure(store) -> None:
    shared = Providers(store)

    def said(results: list, at: float, provider: str = "openai") -> tuple[str, list[str]]:
        return shared.correlate({provider: results}, at, 300, 3, 0.5, 3600)[provider]

    failing = [(f"t{n}\x1fdalle", f"t{n}", True) for n in range(3)]
    assert said(failing, 1000.0) == ("started", ["t0", "t1", "t2"])
    more = [(f"t{n}\x1fdalle", f"t{n}", n < 8) for n in range(10)]
    assert said(more, 1010.0) == ("on", [f"t{n}" for n in range(3, 10)])  # tenants seen since: told once, late
    assert said(more, 1015.0) == ("on", [])
    recovered = [(f"t{n}\x1fdalle", f"t{n}", False) for n in range(10)]
    assert said(recovered, 1020.0)[0] == "on"  # not yet: a window after the last failure
    assert said([], 1314.0) == ("on", [])  # the last failure that qualified: 1015
    assert said([], 1316.0) == ("ended", [f"t{n}" for n in range(10)])
    assert said([], 1317.0) == ("off", [])
    # Two tenants failing is not enough, however large their share; a small share of many tenants neither.
    assert said([(f"u{n}\x1fx", f"u{n}", n < 2) for n in range(3)], 2000.0, "runway") == ("off", [])
    assert said([(f"v{n}\x1fx", f"v{n}", n < 4) for n in range(10)], 2000.0, "stability") == ("off", [])


def _write_one_check(path, upstream, key: str, generation: int) -> None:
    """Write a config file of one tenant with one OpenAI check of `key`, probed every 10 s."""
    path.write_text(yaml.safe_dump({"generation": generation, "providers": {"openai": local(upstream, "openai")},
                                    "tenants": [{"id": "acme", "integrations": [
                                        {"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": key}, interval_seconds=10)}]}]}))


def test_new_credentials_in_the_file_are_checked_at_once_not_after_the_backoff(upstream, make_prober, store, tmp_path) -> None:
    upstream.url("/openai/v1/models", status=401, body=b'{"error": {"code": "invalid_api_key"}}')
    path = tmp_path / "status.yaml"

    _write_one_check(path, upstream, "sk-revoked", 1)
    clock = Clock()
    prober = make_prober(load(path, {}), clock=clock, source=path)
    run_round(prober)
    assert report_of(store, "acme")["data"]["integrations"][0]["reason"] == "invalid_credentials"
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    _write_one_check(path, upstream, "sk-new-and-valid", 2)
    clock.now += 1
    run_round(prober)  # reloads, and checks the new key now rather than in ten intervals
    assert upstream.count("/openai/v1/models") == 2
    assert report_of(store, "acme")["data"]["integrations"][0]["status"] == "healthy"
    assert upstream.headers["/openai/v1/models"]["Authorization"] == "Bearer sk-new-and-valid"



@pytest.mark.parametrize("headers, body, wait", [
    ({"Retry-After": "7"}, None, 7.0),
    ({"retry-after-ms": "1500", "Retry-After": "7"}, None, 1.5),  # OpenAI's finer one first
    ({"retry-after-ms": "nan", "Retry-After": "5"}, None, 5.0),  # garbage in one: the other
    ({"retry-after-ms": "1e400", "Retry-After": "5"}, None, 5.0),
    ({"Retry-After": "1_0"}, None, None),  # float() would read 10
    ({"Retry-After": "-3"}, None, None),
    ({"Retry-After": "999999"}, None, 3600.0),  # honoured up to an hour
    ({"Retry-After": "Fri, 27 Nov 2026 12:00:30 GMT"}, None, 30.0),  # a date: from now
    ({"Retry-After": "Fri, 27 Nov 2026 11:00:00 GMT"}, None, 0.0),  # past
    ({}, {"retry_after": 1.5}, 1.5),
    ({}, {"retry_after": 10 ** 400}, 3600.0),  # too large for a float: a very long wait, capped, never a crash
    ({"Retry-After": "9" * 30}, None, 3600.0),
    ({"Retry-After": "Fri, 27 Nov 2026 12:00:30 -0000"}, None, 30.0),  # UTC with no zone said
    ({}, {"retry_after": True}, None),
    ({}, {"retry_after": "5"}, None),
])
def test_a_wait_is_read_from_every_form_providers_use_and_bounded(headers, body, wait, monkeypatch) -> None:
    from datetime import datetime, timezone
    monkeypatch.setenv("TZ", "America/New_York")  # the machine's zone must not matter
    time.tzset()
    try:
        now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc).timestamp()
        assert retry_after(headers, body, now) == wait
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
known_keys = st.sampled_from(["error", "type", "code", "creditBalance", "credits", "retry_after", "detail", "message"])


@settings(max_examples=300, deadline=None)
@given(provider=st.sampled_from(sorted(PROVIDERS)), status=st.sampled_from([200, 400, 401, 402, 403, 404, 429, 500, 503]),
       document=json_values | st.dictionaries(known_keys, json_values | st.integers(min_value=10 ** 300, max_value=10 ** 400), max_size=4),
       headers=st.dictionaries(st.sampled_from(["Retry-After", "retry-after-ms"]), st.text(max_size=30), max_size=2))
def test_no_answer_makes_a_judge_raise(provider, status, document, headers) -> None:
    outcome = PROVIDERS[provider].judge(status, headers, json.dumps(document).encode(), 5)
    assert outcome.ok == (outcome.reason is None)
    assert outcome.balance is None or math.isfinite(outcome.balance)
    assert outcome.retry_after_s is None or 0 <= outcome.retry_after_s <= 3600


def test_a_huge_number_from_a_provider_stalls_no_prober(upstream, make_prober, store) -> None:
    upstream.url("/runway/v1/organization", body=b'{"creditBalance": 1' + b"0" * 400 + b"}")
    clock = Clock()
    reg = _registry(upstream, *[{"id": str(n), "type": "Runway", "check": _check("runway", {"api_key": f"k{n}"}, interval_seconds=10)}
                                for n in range(4)], prober={"concurrency": 4})
    prober = make_prober(reg, clock=clock)
    run_round(prober)
    assert prober.busy == 0
    rows = report_of(store, "acme")["data"]["integrations"]
    assert all(r["status"] == "healthy" and "balance" not in r for r in rows)  # a balance no float holds is no balance
    clock.now += 11
    run_round(prober)
    assert upstream.count("/runway/v1/organization") == 8  # still probing


def test_a_throttled_result_stays_fresh_while_the_provider_asked_us_to_wait() -> None:
    integration = Integration("acme", "d", "DALL-E", spec_of({"check": _check("openai", {"api_key": KEY})}, ()))
    state = State(Health.UNHEALTHY, 1000.0, "rate_limited", wait_s=1200.0)
    assert report.row(integration, state, 1000.0 + 1250)["reason"] == "rate_limited"  # 90 s + the 1200 s asked for
    assert report.row(integration, state, 1000.0 + 1300)["reason"] == "stale"
    forbidden = State(Health.UNHEALTHY, 1000.0, "forbidden")  # refused credentials back off, whatever the status said
    assert report.row(integration, forbidden, 1000.0 + 800)["reason"] == "forbidden"


def test_a_stale_result_shows_no_balance_and_no_provider_status() -> None:
    integration = Integration("acme", "r", "Runway", spec_of({"check": _check("runway", {"api_key": KEY})}, ()))
    document = report.build_report([integration], {"r": State(Health.HEALTHY, 1000.0, balance=40.0)}, 1000.0,
                                   notes={"Runway": {"indicator": "major", "description": "", "url": "x", "checked_at": None}})
    assert document["data"]["integrations"][0]["balance"] == 40.0 and "provider_status" in document["data"]["stats_by_integration_type"]["Runway"]
    aged = report.expire(document, {"r": 1090.0}, 2000.0)
    assert "balance" not in aged["data"]["integrations"][0] and aged["data"]["integrations"][0]["reason"] == "stale"
    assert "provider_status" not in aged["data"]["stats_by_integration_type"]["Runway"]


def test_one_large_tenant_failing_alone_is_no_incident_and_recovered_tenants_do_not_count(store) -> None:
    shared = Providers(store)
    # Two tenants fail once and recover; one large tenant's 20 checks are throttled: one tenant failing now.
    shared.correlate({"openai": [("a\x1f1", "a", True), ("b\x1f1", "b", True)]}, 1000.0, 300, 3, 0.5, 3600)
    shared.correlate({"openai": [("a\x1f1", "a", False), ("b\x1f1", "b", False)]}, 1010.0, 300, 3, 0.5, 3600)
    big = [(f"big\x1f{n}", "big", True) for n in range(20)]
    assert shared.correlate({"openai": big}, 1020.0, 300, 3, 0.5, 3600)["openai"] == ("off", [])


def test_a_rate_cap_under_one_a_minute_holds_across_an_idle_minute(store) -> None:
    shared = Providers(store)
    assert shared.take({"openai": (5, 0.01)}, 1000.0) == {"openai": 1}
    assert shared.take({"openai": (5, 0.01)}, 1061.0) == {"openai": 0}  # an idle bucket does not come back full
    assert shared.take({"openai": (5, 0.01)}, 1101.0) == {"openai": 1}


def test_new_credentials_are_checked_once_by_the_fleet_however_many_probers_reload(upstream, make_prober, store, tmp_path) -> None:
    upstream.url("/openai/v1/models", status=401, body=b'{"error": {"code": "invalid_api_key"}}')
    path = tmp_path / "status.yaml"

    _write_one_check(path, upstream, "sk-revoked", 1)
    clock = Clock()
    probers = [make_prober(load(path, {}), clock=clock, source=path) for _ in range(3)]
    run_round(probers[0])
    _write_one_check(path, upstream, "sk-new", 2)
    clock.now += 1
    for prober in probers:
        run_round(prober)
    assert upstream.count("/openai/v1/models") == 2  # the first check, and one of the new key: not one per prober


def test_a_judge_that_raises_is_a_probe_error_never_a_stalled_prober(upstream, caplog) -> None:
    upstream.url("/x", body=b"{}")
    spec = replace(spec_of({"probe": {"url": upstream.url("/x")}}, ()), provider="no-such-provider")  # a registry from a newer version
    fetcher = Fetcher()
    try:
        with caplog.at_level(logging.ERROR):
            assert fetcher.probe(spec).reason == "probe_error"
    finally:
        fetcher.close()
    assert "probe.judge_failed" in caplog.text


def test_a_states_balance_and_wait_come_back_from_redis_as_they_went() -> None:
    spec = spec_of({"check": _check("openai", {"api_key": KEY})}, ())
    state = checks.advance(None, Outcome(ok=False, reason="rate_limited", latency_ms=3, retry_after_s=12.5, balance=4.0), spec, 1000.0)
    assert (state.wait_s, state.balance) == (12.5, 4.0)
    assert State.from_json(json.loads(json.dumps(state.to_json()))) == state
    old = {"status": "healthy", "checked_at": 1.0}  # written before either was kept
    assert (State.from_json(old).wait_s, State.from_json(old).balance) == (0.0, None)


def test_an_aged_report_says_no_more_of_provider_trouble_than_it_knows() -> None:
    a, b = (Integration("acme", i, "DALL-E", spec_of({"check": _check("openai", {"api_key": KEY})}, ())) for i in ("a", "b"))
    states = {"a": State(Health.UNHEALTHY, 1000.0, "timeout"), "b": State(Health.UNHEALTHY, 1040.0, "timeout")}
    built = report.summarize([report.row(a, states["a"], 1050.0, suspected=True), report.row(b, states["b"], 1050.0, suspected=True)],
                             "t", {"DALL-E": {"indicator": "none", "suspected": True}})
    assert [r["reason_category"] for r in built["data"]["integrations"]] == ["provider", "provider"]
    aged = report.expire(built, {"a": 1090.0, "b": 1130.0}, 1095.0)
    assert [(r["reason"], r["reason_category"]) for r in aged["data"]["integrations"]] == [("stale", None), ("timeout", "network")]
    assert "provider_status" not in aged["data"]["stats_by_integration_type"]["DALL-E"]


def test_switching_back_to_a_key_used_before_is_checked_at_once_too(upstream, make_prober, store, tmp_path) -> None:
    upstream.url("/openai/v1/models", status=401, body=b'{"error": {"code": "invalid_api_key"}}')
    path = tmp_path / "status.yaml"
    clock = Clock()
    _write_one_check(path, upstream, "sk-a", 1)
    prober = make_prober(load(path, {}), clock=clock, source=path)
    run_round(prober)
    for n, key in enumerate(("sk-b", "sk-a", "sk-b"), start=2):
        _write_one_check(path, upstream, key, n)
        clock.now += 1
        run_round(prober)
        assert upstream.count("/openai/v1/models") == n  # each switch checked at once, a switch back too


def test_a_redis_killed_mid_round_and_restarted_empty_leaves_one_incident_told_once(openai_fake, tmp_path) -> None:
    """Redis dies (SIGKILL) while a prober records a fleet-wide outage and comes back empty: the prober rides it out, seeds
    again, suspects the outage again from fresh results, and tells each tenant once in the feed Redis now holds."""
    from status_service import embedded
    from status_service.prober import Prober
    from status_service.store import Store, connect

    openai_fake["status"], openai_fake["failing"] = 503, {f"sk-{n}" for n in range(4)}
    tenants = [{"id": f"t{n}", "integrations": [{"id": "dalle", "type": "DALL-E", "check": _check("openai", {"api_key": f"sk-{n}"},
                                                                                                  interval_seconds=1)}]} for n in range(4)]
    reg = make_registry(tenants, providers={"openai": {"base_url": openai_fake["base"], "status_page": openai_fake["base"] + "/page"}})
    directory = tmp_path / "redis"
    server = embedded.start(directory)
    store = Store(connect(f"unix://{embedded.socket_path(directory)}", 1.0), "p:")
    prober = Prober(reg, store)
    try:
        run_round(prober)
        server.kill()  # mid-flight: the next writes fail
        server.wait(10)
        for _ in range(3):
            prober.tick()  # fails, logs once, backs off; never raises
        server = embedded.start(directory)  # back, with nothing in it

        def told() -> list[str] | None:
            prober.resume_at = 0  # no need to sit out the backoff here
            prober.incidents.checked_at = 0
            store.client.zadd(store.due_key(), {i.member: 0 for i in reg.integrations})
            run_round(prober)
            found = [t.id for t in reg.tenants for e in History(store).events(t.id, None, 100) if e.body["scope"] == "provider"]
            return found if len(found) == 4 else None

        assert sorted(wait_for(told, timeout_s=20, interval_s=0.2)) == [f"t{n}" for n in range(4)]
        run_round(prober)
        assert sorted(t.id for t in reg.tenants for e in History(store).events(t.id, None, 100) if e.body["scope"] == "provider") == \
            [f"t{n}" for n in range(4)]  # still once each
        assert "openai" in prober.incidents.suspected
    finally:
        prober.stop(timeout_s=0)
        server.kill()
