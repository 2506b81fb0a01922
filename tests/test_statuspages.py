"""Providers' status pages: the parser on recorded documents of each format, and one poll per provider for the fleet."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from status_service import create_app, statuspage
from status_service.settings import Settings
from status_service.statuspage import PageState
from status_service.store.providers import Providers
from tests.conftest import TEST_SECRET_KEY, key_digest, make_registry, report_of, run_round, wait_for
from tests.test_providers import json_values

DATA = Path(__file__).parent / "data" / "statuspages"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("page_format, name, component, expected", [
    ("statuspage", "statuspage-summary.sample.json", "API", PageState("major", "API: partial outage")),
    ("statuspage", "statuspage-summary.sample.json", "Management Portal", PageState("critical", "Management Portal: major outage")),
    ("statuspage", "statuspage-summary.sample.json", "", PageState("major", "Partial System Outage")),
    # A component the page leaves out (incident.io's summary may): the page's indicator decides.
    ("statuspage", "statuspage-summary.sample.json", "Images", PageState("major", "Partial System Outage")),
    ("statuspage", "statuspage-summary-operational.sample.json", "Git Operations", PageState("none", "Git Operations: operational")),
    ("statuspage", "statuspage-summary-operational.sample.json", "", PageState("none", "All Systems Operational")),
    ("instatus", "instatus-summary.sample.json", "", PageState("major", "We're facing an issue with our API")),
    ("instatus", "instatus-summary-up.sample.json", "", PageState("none", "up")),
])
def test_each_recorded_page_reads_as_it_says(page_format, name, component, expected) -> None:
    assert statuspage.parse(page_format, sample(name), component) == expected


@pytest.mark.parametrize("page_format, body", [
    ("statuspage", b"<html>moved</html>"), ("statuspage", b"[]"), ("statuspage", b'{"status": {"indicator": "on fire"}}'),
    ("statuspage", b'{"components": "x"}'), ("instatus", b'{"page": {}}'), ("instatus", b"\xff\xfe"), ("statuspage", b"[" * 100000),
])
def test_a_page_that_cannot_be_read_is_unknown_never_down(page_format, body) -> None:
    assert statuspage.parse(page_format, body) is None


def test_a_newer_instatus_status_is_trouble_and_maintenance_is_none() -> None:
    assert statuspage.parse("instatus", b'{"page": {"status": "SOMEDEGRADEDPERFORMANCE"}}').indicator in statuspage.TROUBLE
    state = statuspage.parse("statuspage", json.dumps({"components": [{"name": "API", "status": "under_maintenance"}]}).encode(), "API")
    assert state == PageState("maintenance", "API: under maintenance") and state.indicator not in statuspage.TROUBLE


def test_the_fleet_polls_each_page_once_and_every_tenant_of_the_provider_sees_its_incident(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    upstream.url("/runway/v1/organization", body=b'{"creditBalance": 10}')
    upstream.url("/openai-page/api/v2/summary.json", body=sample("statuspage-summary.sample.json"))
    upstream.url("/runway-page/api/v2/summary.json", body=b"<html>we moved to another platform</html>")
    tenants = [{"id": f"t{n}", "api_keys": [{"sha256": key_digest(f"key{n}")}], "integrations": [
        {"id": "dalle", "type": "DALL-E", "check": {"provider": "openai", "credentials": {"api_key": f"k{n}"}}},
        {"id": "gen", "type": "Runway", "check": {"provider": "runway", "credentials": {"api_key": f"r{n}"}}},
        {"id": "mj", "type": "MJ", "probe": {"url": upstream.url("/mj")}},
    ]} for n in range(2)]
    providers = {"openai": {"base_url": f"{upstream.base}/openai", "status_page": f"{upstream.base}/openai-page"},
                 "runway": {"base_url": f"{upstream.base}/runway", "status_page": f"{upstream.base}/runway-page"}}
    reg = make_registry(tenants, providers=providers)
    probers = [make_prober(reg), make_prober(reg), make_prober(reg)]
    for prober in probers:
        run_round(prober)
    said = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(Providers(store).pages(["openai", "runway"])))
    assert upstream.count("/openai-page/api/v2/summary.json") == 1 and upstream.count("/runway-page/api/v2/summary.json") == 1
    assert said["openai"]["indicator"] == "major" and said["runway"]["indicator"] == "unknown"  # unreadable: unknown, not down
    for prober in probers:
        prober.pages.read_at = 0  # read what the pages said now, rather than in a few seconds
        store.client.zadd(store.due_key(), {i.member: 0 for i in reg.integrations})
        run_round(prober)
    for n in range(2):
        stats = report_of(store, f"t{n}")["data"]["stats_by_integration_type"]
        assert stats["DALL-E"]["provider_status"] == {"indicator": "major", "description": "API: partial outage",
                                                      "url": f"{upstream.base}/openai-page", "checked_at": said["openai"]["checked_at"]}
        assert "provider_status" not in stats["Runway"] and "provider_status" not in stats["MJ"]


def test_what_a_page_says_reaches_the_status_page_escaped(upstream, make_prober, store, redis_url, prefix) -> None:
    hostile = {"status": {"indicator": "critical", "description": "<script>alert('page')</script>"}, "components": []}
    upstream.url("/stability-page/api/v2/summary.json", body=json.dumps(hostile).encode())
    upstream.url("/stability/v1/user/balance", body=b'{"credits": 12.5}')
    reg = make_registry([{"id": "acme", "api_keys": [{"sha256": key_digest("acme-key")}], "integrations": [
        {"id": "sd", "type": "Stable Diffusion", "check": {"provider": "stability", "credentials": {"api_key": "k"}}}]}],
        providers={"stability": {"base_url": f"{upstream.base}/stability", "status_page": f"{upstream.base}/stability-page"}})
    prober = make_prober(reg)
    run_round(prober)
    wait_for(lambda: Providers(store).pages(["stability"]))
    prober.pages.read_at = 0
    store.client.zadd(store.due_key(), {i.member: 0 for i in reg.integrations})
    run_round(prober)
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    page = web.get("/status", headers={"Authorization": "Bearer acme-key", "Accept": "text/html"}).get_data(as_text=True)
    assert "provider reports critical: &lt;script&gt;alert(&#39;page&#39;)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "balance 12.5" in page


@pytest.mark.parametrize("page_format, body", [
    ("statuspage", b'{"components": 5, "status": {"indicator": "none", "description": "ok"}}'),
    ("instatus", b'{"page": {"status": "HASISSUES"}, "activeIncidents": 7}'),
    ("instatus", b'{"page": {"status": "HASISSUES"}, "activeIncidents": true}'),
])
def test_a_page_of_a_shape_no_format_has_is_unknown_never_a_crash(page_format, body) -> None:
    assert statuspage.parse(page_format, body, "API") is None


page_keys = st.sampled_from(["status", "components", "page", "activeIncidents", "indicator", "description", "name"])


@settings(max_examples=300, deadline=None)
@given(page_format=st.sampled_from(["statuspage", "instatus"]),
       document=json_values | st.dictionaries(page_keys, json_values | st.dictionaries(page_keys, json_values, max_size=3), max_size=4))
def test_no_page_makes_the_parser_raise(page_format, document) -> None:
    """Whatever a page serves as JSON, the parser says unknown (None) or a known indicator; an unreadable component: the page's."""
    state = statuspage.parse(page_format, json.dumps(document).encode(), "API")
    assert state is None or state.indicator in statuspage.INDICATORS


def test_a_page_that_turns_bad_after_an_incident_reads_unknown_at_the_next_poll(upstream, store) -> None:
    from status_service.fetch import Fetcher
    from status_service.pages import Pages
    from status_service.registry import provider_options

    upstream.url("/page/api/v2/summary.json", body=sample("statuspage-summary.sample.json"))
    fetcher = Fetcher()
    pages = Pages(store, fetcher, provider_options({"openai": {"status_page": f"{upstream.base}/page"}}))
    try:
        pages._poll("openai", 1000.0)
        assert Providers(store).pages(["openai"])["openai"]["indicator"] == "major"
        upstream.url("/page/api/v2/summary.json", body=b'{"components": 5}')
        pages._poll("openai", 1060.0)
        assert Providers(store).pages(["openai"])["openai"]["indicator"] == "unknown"  # not the last word it said
    finally:
        pages.close()
        fetcher.close()


def test_a_tenant_sees_its_providers_page_without_waiting_for_its_own_next_check(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    upstream.url("/openai-page/api/v2/summary.json", body=sample("statuspage-summary-operational.sample.json"))
    reg = make_registry([{"id": "acme", "integrations": [
        {"id": "dalle", "type": "DALL-E", "check": {"provider": "openai", "credentials": {"api_key": "k"}, "interval_seconds": 3600}}]}],
        providers={"openai": {"base_url": f"{upstream.base}/openai", "status_page": f"{upstream.base}/openai-page"}})
    prober = make_prober(reg)
    run_round(prober)
    wait_for(lambda: Providers(store).pages(["openai"]))
    assert "provider_status" not in report_of(store, "acme")["data"]["stats_by_integration_type"]["DALL-E"]
    Providers(store).put_page("openai", {"indicator": "critical", "description": "API: major outage", "url": "u", "checked_at": "t"})
    prober.pages.read_at = 0
    prober.tick()  # no check is due for an hour: the report is rewritten all the same
    prober.write_reports(prober.clock(), force=True)  # now, not when its share of the bandwidth allows
    assert report_of(store, "acme")["data"]["stats_by_integration_type"]["DALL-E"]["provider_status"]["indicator"] == "critical"
    assert upstream.count("/openai/v1/models") == 1


def test_the_poll_interval_is_the_files(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    upstream.url("/openai-page/api/v2/summary.json", body=sample("statuspage-summary-operational.sample.json"))
    reg = make_registry([{"id": "acme", "integrations": [{"id": "d", "type": "DALL-E", "check": {"provider": "openai", "credentials": {"api_key": "k"}}}]}],
                        providers={"openai": {"base_url": f"{upstream.base}/openai", "status_page": f"{upstream.base}/openai-page",
                                              "status_page_interval_seconds": 15}})
    run_round(make_prober(reg))
    lease = Providers(store).key("openai", "page:lease")
    assert 0 < store.client.pttl(lease) <= 15000  # the next poll, by any prober, in 15 s
    assert make_registry([], providers={}).providers[0].status_page_interval_s == 60.0


@pytest.mark.parametrize("route", [
    {"header_drip_s": 0.2, "body": b'{"status": {"indicator": "none"}}'},  # headers that never finish in time
    {"drip_s": 0.05, "body": b'{"status": {"indicator": "none", "description": "' + b"x" * 400 + b'"}}'},  # a body that drips
    {"body": b'{"status": {"indicator": "major", "description": "' + b"x" * (10 * 2**20) + b'"}}'},  # 10 MB
])
def test_a_hostile_page_is_unknown_by_its_deadline_and_holds_no_prober_tick_up(upstream, make_prober, store, route) -> None:
    upstream.url("/openai/v1/models", body=b'{"data": []}')
    upstream.url("/openai-page/api/v2/summary.json", **route)
    reg = make_registry([{"id": "acme", "integrations": [{"id": "d", "type": "DALL-E", "check": {"provider": "openai", "credentials": {"api_key": "k"}}}]}],
                        providers={"openai": {"base_url": f"{upstream.base}/openai", "status_page": f"{upstream.base}/openai-page"}})
    prober = make_prober(reg)
    started = time.monotonic()
    prober.tick()  # claims the page and polls it in the background
    assert time.monotonic() - started < 2.0
    said = wait_for(lambda: Providers(store).pages(["openai"]).get("openai"), timeout_s=10)
    assert said["indicator"] == "unknown" and time.monotonic() - started < 8  # cut off at the page's 5 s deadline, or its 2 MiB cap
    prober.drain()
    assert report_of(store, "acme")["data"]["integrations"][0]["status"] == "healthy"  # the check itself went on


def test_a_provider_that_never_finishes_its_headers_is_a_network_timeout(upstream, make_prober, store) -> None:
    upstream.url("/openai/v1/models", header_drip_s=0.2, body=b'{"data": []}')
    upstream.url("/openai-page/api/v2/summary.json", body=sample("statuspage-summary-operational.sample.json"))
    reg = make_registry([{"id": "acme", "integrations": [{"id": "d", "type": "DALL-E",
                                                          "check": {"provider": "openai", "credentials": {"api_key": "k"}, "timeout_seconds": 1}}]}],
                        providers={"openai": {"base_url": f"{upstream.base}/openai", "status_page": f"{upstream.base}/openai-page"}})
    started = time.monotonic()
    run_round(make_prober(reg))
    row = report_of(store, "acme")["data"]["integrations"][0]
    assert (row["reason"], row["reason_category"]) == ("timeout", "network") and time.monotonic() - started < 4
