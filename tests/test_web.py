"""The HTTP contract: the auth matrix, tenant isolation, health endpoints and JSON errors."""
import base64
import time

import pytest
from flask.testing import FlaskClient

from status_service import create_app
from status_service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, integration, make_registry, run_round, tenant

ACME_KEY, ACME_KEY_2, GLOBEX_KEY = "acme-key-1", "acme-key-2", "globex-key"


@pytest.fixture
def seeded(upstream, make_prober):
    """Two tenants with probed integrations and a live prober heartbeat."""
    reg = make_registry(
        [
            tenant("acme", [ACME_KEY, ACME_KEY_2], [
                integration("1", "MJ", upstream.url("/mj")),
                integration("2", "DALL-E", upstream.url("/dalle", status=503)),
            ]),
            tenant("globex", [GLOBEX_KEY], [integration("g1", "Runway", upstream.url("/runway"))]),
        ]
    )
    prober = make_prober(reg)
    run_round(prober)
    return prober


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(client, authorization=None, path="/status", method="GET"):
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.open(path, method=method, headers=headers)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == "error" and body["error"]["code"] == code and body["error"]["message"]
    return body


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {ACME_KEY}",
        f"bearer {ACME_KEY}",
        f"BEARER   {ACME_KEY}  ",
        f"Bearer {ACME_KEY_2}",
        basic(ACME_KEY, ""),
        basic("", ACME_KEY),
        basic(ACME_KEY, "anything"),
        basic("someone", ACME_KEY),
        basic("John Smith", ACME_KEY),
        basic("jos\u00e9", ACME_KEY),
        basic(ACME_KEY, "p w"),
        f"basic {base64.b64encode(f'{ACME_KEY}:'.encode()).decode()}",
    ],
)
def test_accepted_credentials_see_their_tenant(client, seeded, authorization: str) -> None:
    response = get(client, authorization)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert [i["id"] for i in response.get_json()["data"]["integrations"]] == ["1", "2"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Bearer wrong-key",
        f"Bearer {ACME_KEY}x",
        f"Token {ACME_KEY}",
        ACME_KEY,
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(b"nocolon").decode(),
        basic("wrong", "also-wrong"),
        "Bearer " + "k" * 10_000,
        "Bearer key with spaces",
        "Bearer caf\u00e9",
        "Bearer \x7f\x01",
        "Bearer " + "\u00ff" * 40,
        "Digest username=x",
    ],
)
def test_missing_malformed_or_unknown_credentials_get_401(client, seeded, authorization) -> None:
    response = get(client, authorization)
    body = assert_error(response, 401, "unauthorized")
    challenges = response.headers.getlist("WWW-Authenticate")
    assert any(c.startswith("Bearer ") for c in challenges) and any(c.startswith("Basic ") for c in challenges)
    assert ACME_KEY not in response.get_data(as_text=True)
    assert "Traceback" not in body["error"]["message"]


def test_raw_binary_header_bytes_never_cause_a_500(settings, seeded) -> None:
    # The test client cannot send undecodable bytes; a WSGI environ can, as a real server would.
    app = create_app(settings)
    for raw in (b"Bearer \xff\xfe\x00\x01", b"\x00" * 64, b"Basic \x80\x81", b"Bearer " + b"\xe2\x82" * 5000):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/status", "SERVER_NAME": "x", "SERVER_PORT": "80",
                   "wsgi.url_scheme": "http", "HTTP_AUTHORIZATION": raw.decode("latin-1"), "wsgi.input": None}
        status_line = []
        body = b"".join(app.wsgi_app(environ, lambda s, h, e=None: status_line.append(s)))
        assert status_line[0].startswith("401"), (raw, status_line)
        assert b'"unauthorized"' in body


def test_a_key_sees_only_its_own_tenant(client, seeded) -> None:
    acme = get(client, f"Bearer {ACME_KEY}").get_json()["data"]
    globex = get(client, f"Bearer {GLOBEX_KEY}").get_json()["data"]
    assert [(i["id"], i["type"]) for i in acme["integrations"]] == [("1", "MJ"), ("2", "DALL-E")]
    assert [(i["id"], i["type"]) for i in globex["integrations"]] == [("g1", "Runway")]
    assert set(globex["stats_by_integration_type"]) == {"Runway"}
    # Basic with one tenant's key as user and another's as password resolves to exactly one tenant.
    mixed = get(client, basic(GLOBEX_KEY, ACME_KEY)).get_json()["data"]
    assert [i["id"] for i in mixed["integrations"]] == ["g1"]


def test_status_reports_probed_health_with_200(client, seeded) -> None:
    document = get(client, f"Bearer {ACME_KEY}").get_json()
    assert document["status"] == "degraded"
    data = document["data"]
    assert [(i["id"], i["status"], i["reason"]) for i in data["integrations"]] == [
        ("1", "healthy", None),
        ("2", "unhealthy", "http_503"),
    ]
    assert (data["healthy_integrations_count"], data["total_integrations_count"], data["healthy_percentage"]) == (1, 2, 50.0)
    assert all(i["checked_at"] and i["latency_ms"] is not None for i in data["integrations"])


def test_all_unhealthy_tenant_still_gets_200(client, upstream, make_prober) -> None:
    reg = make_registry([tenant("acme", [ACME_KEY], [integration("1", "MJ", upstream.url("/down", status=500))])])
    run_round(make_prober(reg))
    response = get(client, f"Bearer {ACME_KEY}")
    assert response.status_code == 200 and response.get_json()["status"] == "unhealthy"


def test_tenant_without_integrations_is_ok(client, make_prober) -> None:
    run_round(make_prober(make_registry([tenant("empty", [ACME_KEY], [])])))
    document = get(client, f"Bearer {ACME_KEY}").get_json()
    assert document["status"] == "ok"
    assert document["data"]["integrations"] == [] and document["data"]["stats_by_integration_type"] == {}
    assert document["data"]["healthy_percentage"] == 100.0


def test_head_works_where_get_does(client, seeded) -> None:
    for path, auth in (("/status", f"Bearer {ACME_KEY}"), ("/livez", None), ("/readyz", None)):
        response = get(client, auth, path=path, method="HEAD")
        assert response.status_code == 200 and response.get_data() == b""


def test_livez_needs_nothing(settings) -> None:
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url="redis://127.0.0.1:1/0", key_prefix=settings.key_prefix))
    response = app.test_client().get("/livez")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_reports_a_dead_prober_fleet_but_stays_ready(client, store, seeded) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"redis": "ok", "registry": "ok", "prober": "ok"}
    store.forget_prober(seeded.id)
    # Every node shares the fleet: leaving the load balancer would turn honest stale reports into refusals.
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"redis": "ok", "registry": "ok", "prober": "no fresh prober heartbeat"}


def test_a_stale_heartbeat_is_not_fresh(client, store, seeded) -> None:
    store.forget_prober(seeded.id)
    store.heartbeat("old-prober", time.time() - 100, fresh_for_s=90)
    assert client.get("/readyz").get_json()["checks"]["prober"] == "no fresh prober heartbeat"
    store.heartbeat("new-prober", time.time(), fresh_for_s=90)
    assert client.get("/readyz").get_json()["checks"]["prober"] == "ok"


def test_readyz_is_not_ready_before_a_registry_is_seeded(client, store) -> None:
    store.heartbeat("a-prober", time.time(), fresh_for_s=90)
    body = assert_error(client.get("/readyz"), 503, "not_ready")
    assert body["checks"]["registry"] == "not seeded yet"


def test_unreachable_redis_gives_503_with_retry_after(settings) -> None:
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url="redis://127.0.0.1:1/0", key_prefix=settings.key_prefix, redis_timeout_s=0.2))
    client = app.test_client()
    response = client.get("/status", headers={"Authorization": f"Bearer {ACME_KEY}"})
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "redis" not in response.get_data(as_text=True).lower()
    ready = client.get("/readyz")
    assert_error(ready, 503, "not_ready")
    assert ready.get_json()["checks"]["redis"].startswith("unreachable for ")


def test_unseeded_registry_is_503_not_401(client) -> None:
    assert_error(get(client, f"Bearer {ACME_KEY}"), 503, "unavailable")


def test_unknown_path_is_json_404_and_wrong_method_json_405(client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/status/extra"), 404, "not_found")
    response = client.post("/status")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    assert_error(client.delete("/livez"), 405, "method_not_allowed")


def test_unexpected_error_is_json_500_revealing_nothing(settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail /etc/passwd")

    app.test_client_class = FlaskClient  # a route of this test's own, which the OpenAPI document rightly lacks
    response = app.test_client().get("/boom")
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True) and "Traceback" not in body["error"]["message"]


def test_odd_query_strings_are_ignored(client, seeded) -> None:
    for query in ("?%ff%fe", "?a=%00", "?" + "x" * 5000, "?format=html&&&"):
        assert get(client, f"Bearer {ACME_KEY}", path="/status" + query).status_code == 200
