"""The OpenAPI document: valid 3.1, every route in it, and every answer of every route as it says.

Every Flask test client of the suite checks its answers against the document (tests/contract.py);
here every operation is called until each documented answer, media type by media type, has been
seen, and then every error the document lists for it.
"""
from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timezone

import pytest
from flask import Blueprint
from openapi_spec_validator import validate
from werkzeug.wrappers import Response

from status_service import create_app, openapi
from status_service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, integration, key_digest, make_registry, run_round, tenant
from tests.contract import ContractError, contract

ADMIN = {"Authorization": "Bearer admin-secret"}
KEY = {"Authorization": "Bearer acme-key"}
BROWSER = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


@pytest.fixture
def web(redis_url, prefix, upstream, make_prober):
    """acme (file) with a healthy and a failing integration, probed twice; admin key admin-secret; private addresses allowed."""
    reg = make_registry(
        [tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/ok")),
                                       integration("2", "DALL-E", upstream.url("/down", status=503))])],
        probe={"allow_private_addresses": True},
        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}],
    )
    run_round(make_prober(reg), 2)
    return create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()


def test_the_document_is_valid_openapi_3_1_and_public(client) -> None:
    answer = client.get("/openapi.json")
    document = answer.get_json()
    assert answer.status_code == 200 and document["openapi"] == "3.1.0"
    validate(document)  # the OpenAPI 3.1 meta-schema
    assert "public" in answer.headers["Cache-Control"]


def test_every_route_of_the_app_is_in_the_document_and_a_new_one_fails_the_build(settings) -> None:
    app = create_app(settings)
    document = openapi.build(app)
    routes = {(re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == {(path, method) for path, ops in document["paths"].items() for method in ops}
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/undescribed", "undescribed", lambda: "")
    app = create_app(settings)
    app.register_blueprint(extra)
    with pytest.raises(openapi.MissingRoute, match="extra.undescribed"):
        openapi.build(app)


def test_the_contract_refuses_an_answer_the_document_does_not_describe() -> None:
    checked = contract()
    ok = Response(b'{"status": "ok"}', 200, {"Content-Type": "application/json"})
    assert checked.check("GET", "/livez", ok) == "/livez"
    for body, status, media, why in [
        (b'{"status": "ok", "extra": 1}', 200, "application/json", "extra"),  # a field the document does not list
        (b'{"status": "fine"}', 200, "application/json", "fine"),  # a value outside its enum
        (b'{"status": "ok"}', 200, "text/plain", "text/plain"),  # an undocumented media type
        (b'{"status": "error", "error": {"code": "x", "message": "y"}}', 418, "application/json", "418"),  # an undocumented status
    ]:
        with pytest.raises(ContractError, match=why):
            checked.check("GET", "/livez", Response(body, status, {"Content-Type": media}))
    for at in ("yesterday", "20260101T000000Z", "2026-01-01 00:00:00+01:00", "2026-01-01T00:00:00"):
        with pytest.raises(ContractError, match="date-time"):
            checked.check("GET", "/status/events", Response(
                b'{"events": [{"id": "1-0", "at": "%s", "scope": "status", "integration": null, "previous": "ok",'
                b' "current": "degraded", "reason": null}], "next": "1-0"}' % at.encode(), 200, {"Content-Type": "application/json"}))
    with pytest.raises(ContractError, match="no documented operation"):
        checked.check("POST", "/livez", Response(b"", 200, {}))
    with pytest.raises(ContractError, match="empty"):
        checked.check("GET", "/livez", Response(b"", 200, {"Content-Type": "application/json"}))
    envelope = b'{"status": "error", "error": {"code": "internal_error", "message": "an unexpected error occurred"}}'
    with pytest.raises(ContractError, match="a bug"):  # bad input answered with 500 fails whichever test sent it
        checked.check("GET", "/status", Response(envelope, 500, {"Content-Type": "application/json"}))
    with pytest.raises(ContractError, match="WWW-Authenticate"):
        checked.check("GET", "/status", Response(envelope.replace(b"internal_error", b"unauthorized"), 401,
                                                 {"Content-Type": "application/json"}))
    with pytest.raises(ContractError, match="no HTML page"):  # negotiation: JSON sent as the page
        checked.check("GET", "/status", Response(b'{"status": "ok"}', 200, {"Content-Type": "text/html", "Cache-Control": "x", "Vary": "Accept"}))
    with pytest.raises(ContractError, match="maintenance"):
        checked.check("GET", "/status/events", Response(
            b'{"events": [{"id": "1-0", "at": "2026-01-01T00:00:00Z", "scope": "maintenance", "integration": null, "previous": "active",'
            b' "current": "inactive", "reason": null, "maintenance": {"x": [1]}}], "next": "1-0"}', 200, {"Content-Type": "application/json"}))


def _call_every_operation(web, upstream) -> None:
    """Call each operation until each of its documented answers has come back, with real data behind it."""
    for path in ("/livez", "/readyz", "/metrics", "/openapi.json", "/docs", "/static/status.css", "/static/status.js"):
        assert web.get(path).status_code == 200, path
    for path in ("/openapi.json", "/docs", "/static/status.css", "/static/status.js"):  # a browser's revalidation
        assert web.get(path, headers={"If-None-Match": web.get(path).headers["ETag"]}).status_code == 304, path
    for path in ("/static/status.css", "/static/status.js"):
        assert web.get(path, headers={"Range": "bytes=0-3"}).status_code == 206, path
    tagged = web.get("/status", headers=KEY)
    assert web.get("/status", headers={**KEY, "If-None-Match": tagged.headers["ETag"]}).status_code == 304
    assert web.get("/status", headers={**KEY, "Accept": "application/health+json"}).status_code == 200
    assert web.get("/status", headers={**KEY, **BROWSER}).status_code == 200
    assert web.get("/status/history?window=1h", headers=KEY).status_code == 200
    assert web.get("/status/integrations/2", headers=KEY).get_json()["last_checks"]
    assert web.get("/status/events", headers=KEY).get_json()["events"]
    # The admin API, on a tenant of its own.
    assert web.post("/admin/tenants", json={"id": "made"}, headers=ADMIN).status_code == 201
    assert web.get("/admin/tenants", headers=ADMIN).status_code == 200
    assert web.get("/admin/tenants/made", headers=ADMIN).status_code == 200
    key = web.post("/admin/tenants/made/keys", headers=ADMIN).get_json()
    assert web.get("/admin/tenants/made/keys", headers=ADMIN).get_json()["keys"]
    token = web.post("/admin/tenants/acme/badge-tokens", headers=ADMIN).get_json()
    assert web.get("/admin/tenants/acme/badge-tokens", headers=ADMIN).get_json()["badge_tokens"]
    assert web.get(f"/status/badge.svg?token={token['token']}").status_code == 200
    assert web.get("/status/badge.svg", headers=KEY).status_code == 200
    body = {"type": "MJ", "probe": {"url": upstream.url("/ok") + "?api_key=secret", "headers": {"X-Key": "secret"}}}
    assert web.put("/admin/tenants/made/integrations/a", json=body, headers=ADMIN).status_code == 201
    assert web.put("/admin/tenants/made/integrations/a", json=body, headers=ADMIN).status_code == 200
    assert web.get("/admin/tenants/made/integrations", headers=ADMIN).get_json()["integrations"]
    assert web.get("/admin/tenants/made/integrations/a", headers=ADMIN).status_code == 200
    hook = web.post("/admin/tenants/made/webhooks", json={"url": upstream.url("/hook"), "events": ["status.changed"]}, headers=ADMIN)
    assert hook.status_code == 201 and hook.get_json()["secret"]
    assert web.get("/admin/tenants/made/webhooks", headers=ADMIN).get_json()["webhooks"]
    assert web.get("/admin/tenants/made/webhooks/dead", headers=ADMIN).status_code == 200
    assert web.post("/admin/tenants/made/webhooks/dead/replay", headers=ADMIN).status_code == 200
    now = time.time()
    window = web.post("/admin/tenants/made/maintenance", json={"starts_at": iso(now + 60), "ends_at": iso(now + 120), "types": ["MJ"]},
                      headers=ADMIN)
    assert window.status_code == 201
    assert web.get("/admin/tenants/made/maintenance", headers=ADMIN).get_json()["maintenance"]
    assert web.get("/admin/audit?limit=2", headers=ADMIN).get_json()["next_cursor"]
    basic = base64.b64encode(b"admin-secret:").decode()
    assert web.get("/status", headers={"Authorization": f"Basic {basic}", **BROWSER}).status_code == 200  # the overview
    for path in (f"/admin/tenants/made/maintenance/{window.get_json()['id']}", f"/admin/tenants/made/webhooks/{hook.get_json()['id']}",
                 "/admin/tenants/made/integrations/a", f"/admin/tenants/acme/badge-tokens/{token['id']}",
                 f"/admin/tenants/made/keys/{key['id']}", "/admin/tenants/made"):
        assert web.delete(path, headers=ADMIN).status_code == 204, path


def test_every_operation_gives_each_documented_answer_as_documented(web, upstream) -> None:
    _call_every_operation(web, upstream)
    document = contract().document
    wanted = {(path, method, int(code), media.split(";")[0])
              for path, ops in document["paths"].items() for method, op in ops.items()
              for code, answer in op["responses"].items() if code.isdigit() and int(code) < 400
              for media in answer.get("content") or {"": None}}
    got = {(path, method, status, media if status not in (204, 304) else "") for path, method, status, media in web.seen}
    assert not wanted - got, f"never seen: {sorted(wanted - got)}"


def test_every_documented_error_comes_back_in_the_documented_envelope(web, redis_url, prefix) -> None:
    """401 without a key, 403 for a tenant's key on the admin API, 400 for a bad id, 413 and 415 on every route that lists
    them; a 404, 409 and 400 of each kind; then 503 without Redis on every route that lists it."""
    document = contract().document
    concrete = {"tenant_id": "acme", "integration_id": "1", "key_id": "k1", "token_id": "t1", "webhook_id": "w1",
                "window_id": "m1", "filename": "nothing.css"}
    for path, ops in document["paths"].items():
        url = re.sub(r"\{([a-z_]+)\}", lambda m: concrete[m.group(1)], path)
        for method, op in ops.items():
            codes = set(op["responses"])
            call = getattr(web, method)
            if "401" in codes and path != "/metrics":  # open unless a token is set: tests/test_metrics.py
                assert call(url).status_code == 401, (method, url)
            if "403" in codes:
                assert call(url, headers=KEY).status_code == 403, (method, url)
            if "400" in codes and "{" in path and "filename" not in path:
                bad = re.sub(r"\{([a-z_]+)\}", "-bad-", path)
                assert call(bad, headers=ADMIN if path.startswith("/admin") else KEY).status_code == 400, (method, bad)
            if "415" in codes:
                assert call(url, data="x", headers={**ADMIN, "Content-Type": "text/plain"}).status_code == 415, (method, url)
            if "413" in codes:
                assert call(url, data="{" * (2**20 + 2), headers={**ADMIN, "Content-Type": "application/json"}).status_code == 413
    assert web.get("/status/integrations/nope", headers=KEY).status_code == 404
    assert web.get("/admin/tenants/nope", headers=ADMIN).status_code == 404
    assert web.get("/status?tenant=nope", headers={**ADMIN, **BROWSER}).status_code == 404
    assert web.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN).status_code == 409  # the file's
    assert web.delete("/admin/tenants/acme", headers=ADMIN).status_code == 409
    assert web.get("/status/history?window=0h", headers=KEY).status_code == 400
    assert web.get("/status/events?limit=0", headers=KEY).status_code == 400
    assert web.get("/nowhere").status_code == 404 and web.post("/livez").status_code == 405  # the default envelope
    # No Redis at all: every endpoint that needs it says 503 with Retry-After, in the envelope.
    down = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url="redis://127.0.0.1:1/0", key_prefix=prefix,
                               web_memory_bytes=0, redis_timeout_s=0.2)).test_client()
    for path, ops in document["paths"].items():
        url = re.sub(r"\{([a-z_]+)\}", lambda m: concrete[m.group(1)], path)
        for method, op in ops.items():
            if "503" in op["responses"]:
                answer = getattr(down, method)(url, headers=ADMIN if path.startswith("/admin") else KEY, json={})
                assert answer.status_code == 503 and answer.headers["Retry-After"], (method, url, answer.status_code)


def test_the_reference_page_lists_every_operation_with_nothing_from_elsewhere(client) -> None:
    page = client.get("/docs")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    for path, ops in contract().document["paths"].items():
        for method in ops:
            assert f"<code>{method.upper()} {path}</code>" in html, (method, path)
    assert "data.integrations[].status" in html and "healthy | unhealthy | unknown | maintenance" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no CDN, nothing fetched from elsewhere
    assert "<script" not in html
