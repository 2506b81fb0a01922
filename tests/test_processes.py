"""Real processes: the prober as `python -m status_service.prober`, the web tier under gunicorn."""
import os
import signal
import socket
import sys
import time

import pytest
import requests
import yaml

from status_service import embedded
from status_service.store import connect
from tests.conftest import environment, free_port, integration, key_digest, report_of, spawn, stop, wait_for

KEY = "demo-process-key"


@pytest.fixture
def config_file(tmp_path, upstream):
    document = {
        "probe": {"interval_seconds": 5, "timeout_seconds": 2},
        "prober": {"tick_seconds": 0.2},
        "tenants": [
            {
                "id": "acme",
                "api_keys": [{"sha256": key_digest(KEY)}],
                "integrations": [
                    integration("1", "MJ", upstream.url("/mj")),
                    integration("2", "DALL-E", upstream.url("/dalle")),
                ],
            }
        ],
    }
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def raw_status(port: int, header_line: bytes) -> int:
    """Send one request with a raw header line, as no well-behaved client would, and return the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n" + header_line + b"\r\nConnection: close\r\n\r\n")
        return int(conn.recv(64).split(b" ")[1])


def test_gunicorn_and_prober_serve_the_seed_document(redis_url, prefix, config_file, tmp_path) -> None:
    port = free_port()
    env = environment(redis_url, prefix, config_file, PORT=str(port), WEB_CONCURRENCY="2")
    log = open(tmp_path / "processes.log", "wb")
    prober = spawn([sys.executable, "-m", "status_service.prober"], env, log)
    web = spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log)
    try:
        def healthy_document():
            try:
                response = requests.get(f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=2)
            except requests.ConnectionError:
                return None
            return response if response.status_code == 200 and response.json()["status"] == "ok" else None

        response = wait_for(healthy_document, timeout_s=20, interval_s=0.1)
        assert response.headers["Content-Type"] == "application/json"
        data = response.json()["data"]
        assert [(i["id"], i["status"], i["type"]) for i in data["integrations"]] == [("1", "healthy", "MJ"), ("2", "healthy", "DALL-E")]
        assert data["stats_by_integration_type"]["MJ"] == {"total_count": 1, "healthy_count": 1, "healthy_percentage": 100.0, "status": "ok"}
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        unauthorized = requests.get(f"http://127.0.0.1:{port}/status", auth=("wrong", ""), timeout=2)
        assert unauthorized.status_code == 401 and unauthorized.json()["error"]["code"] == "unauthorized"
        basic = requests.get(f"http://127.0.0.1:{port}/status", auth=(KEY, ""), timeout=2)
        assert basic.status_code == 200
        for header in (b"Bearer \xff\xfe\x80", b"A" * 20000, b"Basic \x00\x01", b"Bearer " + KEY.encode() + b"\xc3"):
            assert raw_status(port, b"Authorization: " + header) in (400, 401, 431)
    finally:
        stop(web)
        stop(prober)
        log.close()
    output = (tmp_path / "processes.log").read_text()
    assert KEY not in output and "Traceback" not in output
    assert prober.returncode == 0


def test_sigterm_releases_claims_and_exits_within_the_probe_timeout(redis_url, prefix, tmp_path, upstream, store) -> None:
    document = {
        "probe": {"timeout_seconds": 3, "interval_seconds": 1},
        "prober": {"tick_seconds": 0.1},
        "tenants": [{"id": "acme", "integrations": [integration("slow", "MJ", upstream.url("/slow", delay_s=30))]}],
    }
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(document))
    log = open(tmp_path / "prober.log", "wb")
    prober = spawn([sys.executable, "-m", "status_service.prober"], environment(redis_url, prefix, path), log)
    try:
        wait_for(lambda: upstream.count("/slow") == 1, timeout_s=15)
        started = time.monotonic()
        prober.send_signal(signal.SIGTERM)
        prober.wait(10)
        assert time.monotonic() - started < 3.8  # the probe timeout, a moment to record, process exit
        assert prober.returncode == 0
    finally:
        stop(prober)
        log.close()
    # The probe ran out its deadline before exit: recorded as a timeout and rescheduled, not left claimed.
    report = report_of(store, "acme")
    assert report["data"]["integrations"][0]["reason"] == "timeout"
    (due_ms,) = [score for _, score in store.client.zrange(store.due_key(), 0, -1, withscores=True)]
    assert due_ms / 1000 < time.time() + 1.5  # within the next interval, not at the lease end (~6 s away)
    assert store.readiness(time.time())[1] == 0  # it said goodbye


def test_a_dead_embedded_redis_is_brought_back_with_its_data(tmp_path, upstream) -> None:
    document = {"tenants": [{"id": "acme", "api_keys": [{"sha256": key_digest(KEY)}],
                             "integrations": [integration("1", "MJ", upstream.url("/mj"))]}]}
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(document))
    data = tmp_path / "data"
    env = {"PATH": os.environ["PATH"], "STATUS_CONFIG": str(path), "STATUS_DATA_DIR": str(data)}
    pidfile = data / "redis" / "redis.pid"
    log = open(tmp_path / "prober.log", "wb")
    prober = spawn([sys.executable, "-m", "status_service.prober"], env, log)
    try:
        wait_for(lambda: upstream.count("/mj") >= 1 and pidfile.exists(), timeout_s=15)
        first_pid = int(pidfile.read_text())
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() and int(pidfile.read_text()) != first_pid, timeout_s=15)
        client = connect(f"unix://{embedded.socket_path(data / 'redis')}")
        assert client.hget("status:{t:acme}:report", "body") is not None  # kept on disk, loaded again
    finally:
        stop(prober)
        log.close()
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def test_a_second_signal_during_shutdown_changes_nothing(redis_url, prefix, tmp_path, upstream, store) -> None:
    document = {"prober": {"tick_seconds": 0.1},
                "tenants": [{"id": "acme", "integrations": [integration("1", "MJ", upstream.url("/p", delay_s=1))]}]}
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(document))
    log_path = tmp_path / "prober.log"
    with open(log_path, "wb") as log:
        prober = spawn([sys.executable, "-m", "status_service.prober"], environment(redis_url, prefix, path), log)
        try:
            wait_for(lambda: upstream.count("/p") == 1, timeout_s=15)
            prober.send_signal(signal.SIGINT)  # as Ctrl-C in scripts/run.sh does, followed by its trap's SIGTERM
            prober.send_signal(signal.SIGTERM)
            assert prober.wait(10) == 0
        finally:
            stop(prober)
    assert "Traceback" not in log_path.read_text()
    assert store.readiness(time.time())[1] == 0
