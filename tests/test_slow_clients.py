"""The web tier under gunicorn keeps answering while clients hold half-sent requests open."""
from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Callable, Iterator

import pytest
import requests
import yaml

from tests.conftest import environment, free_port, integration, key_digest, spawn, start_prober, stop, wait_for

KEY = "slow-clients-key"
HALF_REQUEST = b"GET /status HTTP/1.1\r\nHost: x\r\n"  # no blank line: the server waits for more
ANSWER_WITHIN_S = 1.0


@pytest.fixture
def service(tmp_path, upstream, redis_url, prefix) -> Iterator[Callable[[int], int]]:
    """Start a real prober and gunicorn with the project's config; return the port once /status answers 200."""
    document = {
        "probe": {"interval_seconds": 5, "timeout_seconds": 2},
        "prober": {"tick_seconds": 0.2},
        "tenants": [{"id": "acme", "api_keys": [{"sha256": key_digest(KEY)}],
                     "integrations": [integration("1", "MJ", upstream.url("/mj"))]}],
    }
    config = tmp_path / "status.yaml"
    config.write_text(yaml.safe_dump(document))
    started = []
    log = open(tmp_path / "processes.log", "wb")

    def start(workers: int) -> int:
        port = free_port()
        env = environment(redis_url, prefix, config, PORT=str(port), WEB_CONCURRENCY=str(workers))
        started.append(start_prober(env, log))
        started.append(spawn([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"], env, log))
        wait_for(lambda: status_code(port, "/status") == 200, timeout_s=20, interval_s=0.1)
        return port

    yield start
    for process in reversed(started):
        stop(process)
    log.close()


def status_code(port: int, path: str, timeout_s: float = 2.0) -> int | None:
    """GET a path with the tenant's key; None when nothing answered in time."""
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout_s).status_code
    except requests.RequestException:
        return None


def assert_answers_promptly(port: int, seconds: float) -> None:
    """Poll /livez, /readyz and /status for `seconds`; each must answer 200 within ANSWER_WITHIN_S every time."""
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline or rounds < 3:
        for path in ("/livez", "/readyz", "/status"):
            started = time.monotonic()
            code = status_code(port, path, timeout_s=ANSWER_WITHIN_S)
            took = time.monotonic() - started
            assert code == 200 and took < ANSWER_WITHIN_S, f"{path} answered {code} after {took:.2f}s (round {rounds})"
        rounds += 1
        time.sleep(0.5)


@pytest.mark.parametrize("workers, stalled", [
    (2, 16),  # 4 x the workers, twice over
    (1, 31),  # all but one of a worker's threads, as the README promises
])
def test_half_sent_requests_do_not_delay_other_clients(service, workers: int, stalled: int) -> None:
    port = service(workers)
    held = []
    try:
        for _ in range(stalled):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.sendall(HALF_REQUEST)
            held.append(conn)
        time.sleep(0.3)  # let the workers take them all
        assert_answers_promptly(port, seconds=5)
    finally:
        for conn in held:
            conn.close()


def test_a_client_dripping_one_byte_a_second_holds_no_worker(service) -> None:
    port = service(1)  # one worker: a sync worker would be held by the drip, and nothing else served
    stopped = threading.Event()

    def drip() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            for byte in HALF_REQUEST * 100:  # never finishes within the test
                if stopped.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                stopped.wait(1.0)

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(1.5)  # a few bytes in: the request is under way
        assert_answers_promptly(port, seconds=5)
    finally:
        stopped.set()
        dripper.join(5)
