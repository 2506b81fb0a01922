"""The scripts as a developer runs them: the test suite's choice of Redis, and scripts/run.sh's Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from status_service import embedded
from status_service.store import connect
from tests.conftest import REPO, free_port, key_digest, wait_for

FOREIGN_KEY = "customer:1"
FOREIGN_VALUE = "do-not-print-me"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Redis of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TEST_REDIS_URL")}
    env.update(extra)
    return env


@pytest.fixture
def private_redis(tmp_path) -> Iterator[Path]:
    """A Redis of this test's own, standing in for someone's production; yields its socket."""
    directory = tmp_path / "redis"
    server = embedded.start(directory)
    yield embedded.socket_path(directory)
    server.terminate()
    server.wait(10)


def run_pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def flushes(sock: Path) -> dict[str, object]:
    """Return the FLUSHDB/FLUSHALL counts the server has seen."""
    stats = connect(f"unix://{sock}").info("commandstats")
    return {name: value for name, value in stats.items() if "flush" in name}


def test_tests_refuse_a_database_holding_keys_they_did_not_write(private_redis) -> None:
    production = connect(f"unix://{private_redis}?db=0")
    production.set(FOREIGN_KEY, FOREIGN_VALUE)
    result = run_pytest("tests/test_checks.py", env=clean_env(TEST_REDIS_URL=f"unix://{private_redis}?db=0"))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "TEST_REDIS_URL" in output and "1 key(s)" in output, output
    assert " passed" not in output  # refused before any test ran
    assert FOREIGN_VALUE not in output
    assert production.get(FOREIGN_KEY) == FOREIGN_VALUE.encode()
    assert flushes(private_redis) == {}


def test_tests_ignore_redis_url(private_redis) -> None:
    # Database 15: the one the suite once flushed on $REDIS_URL.
    production = connect(f"unix://{private_redis}?db=15")
    production.set(FOREIGN_KEY, FOREIGN_VALUE)
    result = run_pytest("tests/test_web.py", "-k", "test_a_stale_heartbeat_is_not_fresh",
                        env=clean_env(REDIS_URL=f"unix://{private_redis}"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert production.get(FOREIGN_KEY) == FOREIGN_VALUE.encode()
    assert connect(f"unix://{private_redis}").info("keyspace") == {"db15": {"keys": 1, "expires": 0, "avg_ttl": 0}}
    assert flushes(private_redis) == {}


def test_tests_delete_only_their_own_keys_from_test_redis_url(private_redis) -> None:
    url = f"unix://{private_redis}?db=3"
    result = run_pytest("tests/test_web.py", "-k", "test_a_stale_heartbeat_is_not_fresh",
                        env=clean_env(TEST_REDIS_URL=url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert connect(url).dbsize() == 0
    # The test wrote here, and its keys went one UNLINK batch at a time, not by a flush.
    assert connect(url).info("commandstats").get("cmdstat_unlink", {}).get("calls")
    assert flushes(private_redis) == {}


# -- scripts/run.sh and its embedded Redis ---------------------------------------------------------

def livez(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class RunScript:
    """`bash scripts/run.sh` in a session of its own, as in a terminal, on a local config and data folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.redis_dir = self.data / "redis"
        self.pidfile = self.redis_dir / "redis.pid"
        self.sock = embedded.socket_path(self.redis_dir)
        self.port = free_port()
        config = tmp_path / "status.yaml"  # no integrations: nothing reaches the internet
        config.write_text(yaml.safe_dump({"tenants": [{"id": "demo", "api_keys": [{"sha256": key_digest("demo-key")}],
                                                       "integrations": []}]}))
        self.log_path = tmp_path / "run.log"
        self.env = clean_env(PORT=str(self.port), STATUS_DATA_DIR=str(self.data), STATUS_CONFIG=str(config),
                             WEB_CONCURRENCY="1")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(["bash", "scripts/run.sh"], cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: livez(self.port) and self.pidfile.exists() and self.pidfile.read_text().strip(), timeout_s=60)

    def redis_pid(self) -> int:
        return int(self.pidfile.read_text())

    def ctrl_c(self) -> float:
        """Send SIGINT to the whole process group, as a terminal does; return how long run.sh took to exit."""
        assert self.process is not None
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run.sh still runs 15 s after SIGINT:\n{self.log()}") from None
        return time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        """Leave nothing behind, whatever the test did."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if embedded.answers(self.sock):
            os.kill(int(connect(f"unix://{self.sock}").info("server")["process_id"]), signal.SIGTERM)


@pytest.fixture
def run_script(tmp_path) -> Iterator[RunScript]:
    script = RunScript(tmp_path)
    yield script
    script.close()


def test_ctrl_c_on_run_sh_stops_the_embedded_redis_it_started(run_script) -> None:
    run_script.start()
    pid = run_script.redis_pid()
    assert embedded.alive(pid) and embedded.answers(run_script.sock)
    run_script.ctrl_c()
    assert not embedded.alive(pid), run_script.log()
    assert not embedded.answers(run_script.sock)
    assert not livez(run_script.port)
    assert (run_script.redis_dir / "appendonly.aof").exists()  # its data stays on disk


def test_ctrl_c_on_run_sh_stops_the_embedded_redis_the_prober_restarted(run_script) -> None:
    run_script.start()
    first = run_script.redis_pid()
    os.kill(first, signal.SIGKILL)
    # The prober brings a dead embedded Redis back within seconds; that server is run.sh's to stop too.
    wait_for(lambda: run_script.pidfile.exists() and run_script.pidfile.read_text().strip()
             and run_script.redis_pid() != first and embedded.answers(run_script.sock), timeout_s=20)
    second = run_script.redis_pid()
    run_script.ctrl_c()
    assert not embedded.alive(second), run_script.log()
    assert not embedded.answers(run_script.sock)


def test_run_sh_leaves_running_an_embedded_redis_it_did_not_start(run_script) -> None:
    embedded.ensure(run_script.redis_dir)  # already running, as for another user of the same folder
    pid = run_script.redis_pid()
    run_script.start()
    run_script.ctrl_c()
    assert embedded.alive(pid) and embedded.answers(run_script.sock), run_script.log()
    assert not livez(run_script.port)
