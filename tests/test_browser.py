"""The status page in a real headless Chromium: Basic login, what it shows against the JSON, screenshots."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import REPO, environment, free_port, integration, spawn, stop, tenant, wait_for
from tests.test_page import Page

KEY = "browser-test-key"
SHOTS = REPO / "docs" / "screenshots"  # written there with UPDATE_SCREENSHOTS=1, else beside the test's other files


def chromium() -> str:
    """Return Chromium's path; fail loudly without it (scripts/test.sh installs it): this test is never skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is not installed: run `apt-get install chromium` (scripts/test.sh does, as root on Debian)")
    return found


def headless(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args, url],
                          capture_output=True, timeout=90)


@pytest.fixture
def service(redis_url, prefix, upstream, tmp_path):
    """A real gunicorn and prober on a config of four integrations, one failing, and its port once /status is healthy."""
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump({"probe": {"interval_seconds": 5}, "prober": {"tick_seconds": 0.2},
                                    "history": {"compact_every_seconds": 1}, "tenants": [
        tenant("acme", [KEY], [integration("mj-1", "MJ", upstream.url("/mj")), integration("mj-2", "MJ", upstream.url("/mj")),
                               integration("dalle-1", "DALL-E", upstream.url("/dalle", status=503)),
                               integration("runway-1", "Runway", upstream.url("/runway"))]),
    ]}))
    port = free_port()
    env = environment(redis_url, prefix, path, PORT=str(port), WEB_CONCURRENCY="1")
    log = open(tmp_path / "service.log", "wb")
    processes = [spawn([sys.executable, "-m", "status_service.prober"], env, log),
                 spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log)]

    def probed() -> bool:
        try:
            rows = requests.get(f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return all(r.get("checked_at") for r in rows.get("data", {}).get("integrations", [{}]))

    try:
        wait_for(probed, timeout_s=30, interval_s=0.2)
        yield port
    finally:
        for process in processes:
            stop(process)
        log.close()


def test_the_page_in_chromium_shows_what_the_json_says(service, tmp_path) -> None:
    url = f"http://{KEY}:@127.0.0.1:{service}/status"  # Basic credentials, as the browser's login dialog sends them
    auth = {"Authorization": f"Bearer {KEY}"}
    # Once the first checks are folded, the chart has a point to draw.
    wait_for(lambda: requests.get(f"http://127.0.0.1:{service}/status/history", headers=auth, timeout=5).json()["points"],
             timeout_s=30, interval_s=0.5)
    dom = headless(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout.decode())
    document = requests.get(f"http://127.0.0.1:{service}/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    shown = {i: cells[2].split()[-1] for i, cells in page.rows.items()}
    assert shown == {r["id"]: r["status"] for r in document["data"]["integrations"]}
    assert any(tag == "svg" and attrs.get("id") == "chart" for tag, attrs in page.tags)
    assert any(tag == "circle" for tag, _ in page.tags)  # the chart draws the point history has
    assert document["status"] == "degraded" and 'id="overall">degraded<' in dom.stdout.decode()
    shots = SHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    for width in (375, 1440):
        shot = shots / f"status-{width}.png"
        taken = headless(url, f"--window-size={width},900", f"--screenshot={shot}")
        assert taken.returncode == 0 and shot.stat().st_size > 5000, taken.stderr[-2000:]
        assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_credentials_the_browser_is_asked_for_them(service) -> None:
    response = requests.get(f"http://127.0.0.1:{service}/status", headers={"Accept": "text/html"}, timeout=5)
    assert response.status_code == 401 and 'Basic realm="status"' in response.headers["WWW-Authenticate"]
