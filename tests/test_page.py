"""/status for a browser: a page rendered on the server, escaped, with its security headers; JSON for everyone else."""
from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest

from status_service import create_app
from status_service.settings import Settings
from tests.conftest import TEST_SECRET_KEY, integration, make_registry, run_round, tenant

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
EVIL = '<script>alert("x")</script>'


class Page(HTMLParser):
    """The parts of a page the tests look at: rows by id with their cells, scripts, the chart, landmarks."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.tags: list[tuple[str, dict]] = []
        self._row: str | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "data-id" in attrs:
            self._row = attrs["data-id"]
            self.rows[self._row] = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self.rows[self._row].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
def web(redis_url, prefix, upstream, make_prober):
    reg = make_registry([tenant("acme", ["acme-key"], [
        integration("1", "MJ", upstream.url("/mj")),
        integration("2", EVIL, upstream.url("/d", status=503)),
    ])])
    run_round(make_prober(reg))
    return create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_a_browser_gets_a_page_that_says_what_the_json_says(web) -> None:
    response = web.get("/status", headers={"Accept": BROWSER, "Authorization": basic("acme-key")})
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["Vary"] == "Accept"
    html = response.get_data(as_text=True)
    page = Page(html)
    document = web.get("/status", headers={"Authorization": "Bearer acme-key"}).get_json()
    for row in document["data"]["integrations"]:
        cells = page.rows[row["id"]]
        assert cells[0] == row["id"] and row["status"] in cells[2]
    assert EVIL not in html and "&lt;script&gt;" in html  # every string is escaped
    assert any(tag == "svg" and attrs.get("id") == "chart" for tag, attrs in page.tags)  # the chart, with its text alternative
    assert any(tag == "desc" for tag, _ in page.tags)
    assert {"header", "main", "footer"} <= {tag for tag, _ in page.tags}
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts and all(attrs.get("src", "").startswith("/static/") for attrs in scripts)  # no inline script
    assert document["status"] in html and "degraded" in html


def test_a_browser_without_credentials_gets_the_login_dialog(web) -> None:
    response = web.get("/status", headers={"Accept": BROWSER})
    assert response.status_code == 401
    assert 'Basic realm="status", charset="UTF-8"' in response.headers.getlist("WWW-Authenticate")


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html, application/json", "application/json;q=1, text/html;q=0.5"])
def test_everyone_else_gets_the_json(web, accept) -> None:
    headers = {"Authorization": "Bearer acme-key", **({"Accept": accept} if accept else {})}
    response = web.get("/status", headers=headers)
    assert response.mimetype == "application/json" and response.get_json()["status"] == "degraded"


def test_the_static_files_are_served_and_odd_pages_are_pages(web) -> None:
    for name in ("status.js", "status.css"):
        assert web.get(f"/static/{name}").status_code == 200
    for page in ("0", "-1", "abc", "99999999999", "2", "\u00b2", "1\u00b2", "\u2460", "\u0661"):
        response = web.get(f"/status?page={page}", headers={"Accept": BROWSER, "Authorization": basic("acme-key")})
        assert response.status_code == 200


def test_the_chart_draws_the_percentage_across_the_day() -> None:
    from status_service import page

    start = 1_800_000_000.0
    drawn = page.chart([{"at": start, "healthy_percentage": 100.0, "min": 100.0},
                        {"at": start + 43_200, "healthy_percentage": 50.0, "min": 0.0}], start, start + 86_400)
    assert drawn.path == "M0.0,0.0 L360.0,80.0" and drawn.points == 2
    assert "50 % at the last point" in drawn.summary and "0 % at the lowest" in drawn.summary
    assert page.chart([], start, start + 86_400).path == ""


@pytest.mark.parametrize("seconds, said", [(0, "0 s ago"), (12, "12 s ago"), (59, "59 s ago"), (61, "1 min ago"),
                                          (7200, "2 h ago"), (200_000, "2 d ago"), (-5, "0 s ago")])
def test_last_checks_are_said_as_a_person_says_them(seconds, said) -> None:
    from status_service import page, report

    now = 1_800_000_000.0
    assert page.ago(report.iso(now - seconds), now) == said
    assert page.ago(None, now) == "never"


def test_an_admin_sees_every_tenant_a_page_at_a_time_each_linked_to_its_page(redis_url, prefix, upstream, make_prober, monkeypatch) -> None:
    from status_service.web import page as pages
    from tests.conftest import key_digest

    monkeypatch.setattr(pages, "OVERVIEW_TENANTS", 2)
    reg = make_registry([tenant("acme", ["acme-key"], [integration("1", "MJ", upstream.url("/mj")),
                                                       integration("2", "DALL-E", upstream.url("/d", status=503))]),
                         tenant("beta", ["beta-key"], [integration("b", "MJ", upstream.url("/mj"))]),
                         tenant("gamma", ["gamma-key"], [integration("g", "MJ", upstream.url("/d", status=503))])],
                        admin_keys=[{"id": "ops", "sha256": key_digest("admin-secret")}])
    run_round(make_prober(reg))
    web = create_app(Settings(secret_keys=TEST_SECRET_KEY, redis_url=redis_url, key_prefix=prefix, web_memory_bytes=0)).test_client()
    admin = {"Accept": BROWSER, "Authorization": basic("admin-secret")}
    first = Page(web.get("/status", headers=admin).get_data(as_text=True))
    assert {i: cells[1].split()[-1] for i, cells in first.rows.items()} == {"acme": "degraded", "beta": "ok"}
    assert first.rows["acme"][2] == "1 of 2"
    links = [attrs["href"] for tag, attrs in first.tags if tag == "a"]
    assert "?tenant=acme" in links and "?after=beta" in links
    second = Page(web.get("/status?after=beta", headers=admin).get_data(as_text=True))
    assert {i: cells[1].split()[-1] for i, cells in second.rows.items()} == {"gamma": "unhealthy"}
    tenant_page = Page(web.get("/status?tenant=acme", headers=admin).get_data(as_text=True))
    assert set(tenant_page.rows) == {"1", "2"}
    monkeypatch.setattr(pages, "PAGE_ROWS", 1)  # a tenant's next page keeps the tenant
    first_rows = Page(web.get("/status?tenant=acme", headers=admin).get_data(as_text=True))
    assert "?tenant=acme&page=2" in [attrs["href"] for tag, attrs in first_rows.tags if tag == "a"]
    assert set(Page(web.get("/status?tenant=acme&page=2", headers=admin).get_data(as_text=True)).rows) == {"2"}
    # A report no prober rewrote in time is counted as it ages, as /status says it.
    from status_service.store import Store, connect

    store = Store(connect(redis_url), prefix)
    store.client.hset(store.report_key("beta"), mapping={"until": 1, "stale": '{"b": 1.0}'})
    aged = Page(web.get("/status", headers=admin).get_data(as_text=True))
    assert aged.rows["beta"][1].split()[-1] == "unhealthy" and aged.rows["beta"][2] == "0 of 1"
    assert web.get("/status?tenant=nobody", headers=admin).status_code == 404
    assert web.get("/status?tenant=bad%20id", headers=admin).status_code == 404
    assert web.get("/status", headers={**admin, "Accept": "application/json"}).status_code == 401  # the admin key is no tenant's key
