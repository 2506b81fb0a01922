"""GET /status/badge.svg: a tenant's status as a small SVG, for a badge token that reads nothing else."""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree

import pytest
import requests
import yaml

from status_service import badge, create_app
from status_service.settings import Settings
from tests.conftest import (
    TEST_SECRET_KEY, environment, free_port, integration, key_digest, make_registry, run_round, spawn, stop, tenant, wait_for,
)

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def web(redis_url, prefix, upstream, make_prober):
    """acme (degraded: MJ healthy, DALL-E failing) and globex (ok), probed once."""
    reg = make_registry([
        tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj")), integration("2", "DALL-E", upstream.url("/d", status=500))]),
        tenant("globex", ["globex-key"], [integration("g", "MJ", upstream.url("/mj"))]),
    ], admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    run_round(make_prober(reg))
    return create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()


def token_for(web, tenant_id: str) -> dict:
    made = web.post(f"/admin/tenants/{tenant_id}/badge-tokens", headers=ADMIN)
    assert made.status_code == 201, made.get_data(as_text=True)
    return made.get_json()


def test_a_badge_token_reads_its_tenants_badge_and_nothing_else(web) -> None:
    made = token_for(web, "acme")
    assert made["token"].startswith("sbt_")
    shown = web.get(f"/status/badge.svg?token={made['token']}")
    assert shown.status_code == 200 and shown.mimetype == "image/svg+xml"
    svg = ElementTree.fromstring(shown.get_data())  # well-formed XML
    assert svg.get("aria-label") == "status: ! degraded"
    assert "ok" in web.get(f"/status/badge.svg?token={token_for(web, 'globex')['token']}").get_data(as_text=True)
    for path in ("/status", "/status/history", "/status/events", "/admin/tenants"):
        assert web.get(path, headers={"Authorization": f"Bearer {made['token']}"}).status_code == 401, path
    # A tenant's own key shows the badge too.
    assert web.get("/status/badge.svg", headers={"Authorization": "Bearer acme-key"}).status_code == 200
    listed = web.get("/admin/tenants/acme/badge-tokens", headers=ADMIN).get_json()["badge_tokens"]
    assert [t["id"] for t in listed] == [made["id"]] and made["token"] not in str(listed)


@pytest.mark.parametrize("query", ["?token=", "?token=sbt_unknown", "?token=" + "x" * 5000, "?token=%00%ff", "?token=a%20b", ""])
def test_a_bad_or_missing_token_gets_401(web, query) -> None:
    response = web.get(f"/status/badge.svg{query}")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"


def test_a_revoked_token_and_a_deleted_tenants_tokens_stop_working(web) -> None:
    made = token_for(web, "acme")
    assert web.delete(f"/admin/tenants/acme/badge-tokens/{made['id']}", headers=ADMIN).status_code == 204
    assert web.delete(f"/admin/tenants/acme/badge-tokens/{made['id']}", headers=ADMIN).status_code == 404
    assert web.get(f"/status/badge.svg?token={made['token']}").status_code == 401
    assert web.post("/admin/tenants", json={"id": "api"}, headers=ADMIN).status_code == 201
    other = token_for(web, "api")
    assert web.delete("/admin/tenants/api", headers=ADMIN).status_code == 204
    assert web.get(f"/status/badge.svg?token={other['token']}").status_code == 401
    assert web.post("/admin/tenants/nobody/badge-tokens", headers=ADMIN).status_code == 404
    # A tenant made again under the id starts with no token, and the old one reads nothing of it.
    assert web.post("/admin/tenants", json={"id": "api"}, headers=ADMIN).status_code == 201
    assert web.get(f"/status/badge.svg?token={other['token']}").status_code == 401
    assert web.get("/admin/tenants/api/badge-tokens", headers=ADMIN).get_json()["badge_tokens"] == []


def test_a_tenant_the_config_file_drops_takes_its_tokens_along(web, upstream, make_prober) -> None:
    made = token_for(web, "globex")
    assert web.get(f"/status/badge.svg?token={made['token']}").status_code == 200
    reg = make_registry([tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj"))])],
                        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}], generation=2)
    run_round(make_prober(reg))  # seeds the file without globex
    assert web.get(f"/status/badge.svg?token={made['token']}").status_code == 401  # not a 503 that never clears
    assert web.post("/admin/tenants", json={"id": "globex"}, headers=ADMIN).status_code == 201
    assert web.get(f"/status/badge.svg?token={made['token']}").status_code == 401  # nor the new globex's badge
    assert web.get("/admin/tenants/globex/badge-tokens", headers=ADMIN).get_json()["badge_tokens"] == []


def test_the_cli_issues_a_badge_token(web, redis_url, prefix) -> None:
    app = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0))
    result = app.test_cli_runner().invoke(args=["keys", "badge", "--tenant", "acme"])
    assert result.exit_code == 0, result.stderr
    token = result.stdout.split("token:")[1].split()[0]
    assert web.get(f"/status/badge.svg?token={token}").status_code == 200
    assert app.test_cli_runner().invoke(args=["keys", "badge", "--tenant", "nobody"]).exit_code == 1


@pytest.mark.parametrize("status, mark", [("ok", "\u2713"), ("degraded", "!"), ("unhealthy", "\u2717"), ("<script>", "?")])
def test_every_status_reads_without_colour(status, mark) -> None:
    svg = ElementTree.fromstring(badge.render(status))
    shown = status if status in badge.COLOURS else "unknown"
    assert svg.get("aria-label") == f"status: {mark} {shown}" and "<script>" not in badge.render(status).decode()


def test_the_token_is_never_logged(redis_url, prefix, upstream, tmp_path, web) -> None:
    made = token_for(web, "acme")
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj")),
                                                                              integration("2", "DALL-E", upstream.url("/d", status=500))]),
                                                tenant("globex", ["globex-key"], [integration("g", "MJ", upstream.url("/mj"))])]}))
    port = free_port()
    log = open(tmp_path / "web.log", "wb")
    server = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"],
                   environment(redis_url, prefix, path, PORT=str(port), WEB_CONCURRENCY="1"), log)
    try:
        url = f"http://127.0.0.1:{port}/status/badge.svg?token={made['token']}"
        wait_for(lambda: _get(url) == 200, timeout_s=20)
        assert _get(f"http://127.0.0.1:{port}/status/badge.svg?token=sbt_wrong-{made['token'][4:]}") == 401
    finally:
        stop(server)
        log.close()
    written = (tmp_path / "web.log").read_text()
    assert "/status/badge.svg" in written and made["token"] not in written and made["token"][4:] not in written


def _get(url: str) -> int:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.ConnectionError:
        return 0
