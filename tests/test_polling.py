"""Cheap polling: /status carries a strong ETag, and a client that holds the current report gets 304."""
from __future__ import annotations

import json
import time

import pytest

from status_service import create_app, report
from status_service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, integration, key_digest, make_registry, run_round, tenant, wait_for

ACME, GLOBEX = "acme-key", "globex-key"


@pytest.fixture
def prober(upstream, make_prober):
    """Two tenants, each probed once: acme (MJ healthy) and globex (Runway unhealthy)."""
    reg = make_registry([
        tenant("acme", [ACME], [integration("1", "MJ", upstream.url("/mj"))]),
        tenant("globex", [GLOBEX], [integration("g1", "Runway", upstream.url("/runway", status=503))]),
    ])
    made = make_prober(reg)
    run_round(made)
    return made


@pytest.fixture(params=[0, 1024 * 1024], ids=["reads-redis", "from-memory"])
def client(request, redis_url, prefix):
    """The app with each request reading Redis, and with the worker's memory of reports on."""
    settings = Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=request.param)
    app = create_app(settings)
    yield app.test_client()
    app.extensions["status_web"].close()


def get(client, key: str, method: str = "GET", **headers: str):
    return client.open("/status", method=method, headers={"Authorization": f"Bearer {key}", **headers})


def test_an_unchanged_report_gets_304_with_no_body(client, prober) -> None:
    first = get(client, ACME)
    assert first.status_code == 200
    tag = first.headers["ETag"]
    assert tag.startswith('"') and not tag.startswith("W/")  # strong
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert first.headers["ETag"] == f'"{report.etag(first.get_data())}"'
    for method in ("GET", "HEAD"):
        again = get(client, ACME, method, **{"If-None-Match": tag})
        assert again.status_code == 304 and again.get_data() == b""
        assert again.headers["ETag"] == tag and again.headers["Cache-Control"] == "private, no-cache"
    # A list of tags, a weak form of the same tag, and * all name what the client holds.
    for held in (f'"nope", {tag}', f"W/{tag}", "*"):
        assert get(client, ACME, **{"If-None-Match": held}).status_code == 304
    head = get(client, ACME, "HEAD")
    assert head.status_code == 200 and head.get_data() == b"" and head.headers["ETag"] == tag


def test_a_change_gets_200_with_a_new_etag(client, prober, upstream) -> None:
    tag = get(client, ACME).headers["ETag"]
    time.sleep(1.1)  # generated_at and checked_at have whole seconds
    upstream.url("/mj", status=500)
    prober.store.client.zadd(prober.store.due_key(), {prober.registry.integrations[0].member: 0})  # due now
    run_round(prober)
    # A worker with memory learns of the new report by push, a moment after it is written.
    changed = wait_for(lambda: (r := get(client, ACME, **{"If-None-Match": tag})).status_code == 200 and r)
    assert changed.headers["ETag"] != tag and changed.get_json()["data"]["integrations"][0]["reason"] == "http_500"
    assert get(client, ACME, **{"If-None-Match": changed.headers["ETag"]}).status_code == 304


def test_tenants_whose_documents_differ_have_different_etags(client, prober) -> None:
    acme, globex = get(client, ACME), get(client, GLOBEX)
    assert acme.get_data() != globex.get_data()
    assert acme.headers["ETag"] != globex.headers["ETag"]
    # One tenant's tag never gets a 304 from the other's report.
    assert get(client, GLOBEX, **{"If-None-Match": acme.headers["ETag"]}).status_code == 200


def test_a_304_does_not_read_the_report_body(settings, prober, store) -> None:
    client = create_app(settings).test_client()  # memory off: every request reads Redis
    tag = get(client, ACME).headers["ETag"]
    # Take the body away: a request that read it would fail; one that reads only the tag does not.
    store.client.hdel(store.report_key("acme"), "body")
    assert get(client, ACME, **{"If-None-Match": tag}).status_code == 304
    assert get(client, ACME).status_code == 503


def test_a_report_aged_by_the_clock_gets_a_tag_of_its_own(settings, prober, store) -> None:
    client = create_app(settings).test_client()
    fresh = get(client, ACME)
    # The prober fleet is gone and the result has turned stale: the web tier ages the report itself.
    store.client.hset(store.report_key("acme"), mapping={"until": 1, "stale": '{"1": 1.0}'})
    aged = get(client, ACME, **{"If-None-Match": fresh.headers["ETag"]})
    assert aged.status_code == 200 and aged.get_json()["data"]["integrations"][0]["reason"] == "stale"
    assert aged.headers["ETag"] not in (fresh.headers["ETag"], "")
    assert get(client, ACME, **{"If-None-Match": aged.headers["ETag"]}).status_code == 304


@pytest.mark.parametrize("held", ['""', "garbage", '"unterminated', "W/", ",,,", '"' + "x" * 8000 + '"', "\u00e9t\u00e9"])
def test_odd_if_none_match_headers_get_the_report(client, prober, held) -> None:
    response = get(client, ACME, **{"If-None-Match": held})
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_an_edit_made_inside_redis_tags_the_report_as_the_prober_does(redis_url, prefix, store, make_prober) -> None:
    reg = make_registry([], admin_keys=[{"id": "ops", "sha256": key_digest("admin")}])
    run_round(make_prober(reg))
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    admin = {"Authorization": "Bearer admin"}
    assert web.post("/admin/tenants", json={"id": "api"}, headers=admin).status_code == 201
    key = web.post("/admin/tenants/api/keys", headers=admin).get_json()["key"]
    before = get(web, key).headers["ETag"]
    put = web.put("/admin/tenants/api/integrations/1", json={"type": "MJ", "probe": {"url": "https://example.com/"}}, headers=admin)
    assert put.status_code == 201, put.get_data(as_text=True)
    body, tag = store.client.hmget(store.report_key("api"), ["body", "e"])
    assert tag.decode() == report.etag(body)  # Lua's sha1hex and Python's hashlib agree
    after = get(web, key, **{"If-None-Match": before})
    assert after.status_code == 200 and after.headers["ETag"] == f'"{tag.decode()}"'


def test_an_aged_report_has_one_tag_from_memory_and_from_redis(redis_url, prefix, prober, store) -> None:
    # One result stale already, another turning stale in a moment: the report is aged twice.
    store.client.hset(store.report_key("acme"), mapping={"until": 1, "stale": json.dumps({"1": 1.0, "later": time.time() + 0.5})})
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=1024 * 1024))
    remembering = app.test_client()
    reading = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    get(remembering, ACME)
    wait_for(lambda: app.extensions["status_web"].mirror.live)
    get(remembering, ACME)  # read, aged and remembered aged
    time.sleep(0.6)
    tags = {get(remembering, ACME).headers["ETag"] for _ in range(3)} | {get(reading, ACME).headers["ETag"]}
    app.extensions["status_web"].close()
    assert len(tags) == 1 and tags.pop().count(".") == 1  # aged once, from the base tag, however often it is aged again


# -- other representations ----------------------------------------------------------------------
HEALTH = "application/health+json"


def test_health_json_says_pass_warn_or_fail_with_a_check_per_type(client, prober) -> None:
    plain = get(client, ACME)
    health = get(client, ACME, Accept=HEALTH)
    assert health.status_code == 200 and health.mimetype == HEALTH and health.headers["Vary"] == "Accept"
    document = health.get_json()
    assert document["status"] == "pass"
    check = document["checks"]["MJ:healthyPercentage"][0]
    assert (check["observedValue"], check["observedUnit"], check["status"]) == (100.0, "percent", "pass")
    assert document["checks"]["integrations:healthyCount"][0]["observedValue"] == 1
    failing = get(client, GLOBEX, Accept=HEALTH).get_json()
    assert failing["status"] == "fail" and failing["checks"]["Runway:healthyPercentage"][0]["status"] == "fail"
    # A tag per representation: the JSON's tag gets no 304 for the health document, and the reverse.
    assert health.headers["ETag"] != plain.headers["ETag"]
    assert get(client, ACME, Accept=HEALTH, **{"If-None-Match": plain.headers["ETag"]}).status_code == 200
    assert get(client, ACME, Accept=HEALTH, **{"If-None-Match": health.headers["ETag"]}).status_code == 304
    assert get(client, ACME, **{"If-None-Match": health.headers["ETag"]}).status_code == 200


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, application/health+json;q=0.5",
                                    "text/plain", ";;;q=abc", "application/health+json;q=0", "x" * 5000])
def test_every_other_accept_gets_the_exact_json_document(client, prober, accept) -> None:
    plain = get(client, ACME)
    response = get(client, ACME, **({} if accept is None else {"Accept": accept}))
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_data() == plain.get_data() and response.headers["Vary"] == "Accept"
