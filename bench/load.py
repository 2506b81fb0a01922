"""HTTP load for the serving benchmark: wrk when it is on PATH, else a small asyncio generator.

Both drive GET <path> on 127.0.0.1 over keep-alive connections (reconnecting when the server
closes one, as gunicorn does past its keep-alive limits) for a fixed duration, rotating the
Authorization header over the given keys, and report requests/s, p50/p99 latency and the count of
responses of 400 and up (as wrk counts them: a 304 is an answer too).
Set BENCH_LOADGEN=python to force the fallback.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .common import HOST

MAX_REQUESTS = int(os.environ.get("BENCH_MAX_REQUESTS", "5000000"))  # the fallback's hard count bound


@dataclass
class LoadResult:
    """What one load run measured."""

    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors_4xx_5xx: int
    socket_errors: int
    bytes_read: int = 0  # everything the responses carried, head and body

    @property
    def bytes_per_response(self) -> float:
        """Return the mean size of a response on the wire."""
        return self.bytes_read / max(1, self.requests)

    @property
    def rps(self) -> float:
        """Return completed requests per second."""
        return self.requests / self.seconds


def tool() -> str:
    """Return which load generator this run uses."""
    if os.environ.get("BENCH_LOADGEN", "").lower() == "python" or shutil.which("wrk") is None:
        return "python-asyncio"
    return "wrk"


def run(port: int, path: str, keys: list[str], duration_s: float, connections: int, workdir: Path,
        headers: dict[str, str] | None = None) -> LoadResult:
    """Drive the server for duration_s with `connections` connections; keys rotate per request, `headers` go with each."""
    if tool() == "wrk":
        return _wrk(port, path, keys, duration_s, connections, workdir, headers or {})
    return asyncio.run(_python(port, path, keys, duration_s, connections, headers or {}))


# -- wrk ----------------------------------------------------------------------------------------
_LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "bytes": %d, '
    .. '"status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.bytes,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def _lua(keys: list[str], headers: dict[str, str]) -> str:
    """Return a wrk script: one static key, or a per-thread rotation over many; plus a JSON summary."""
    fixed = "".join(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n" for name, value in headers.items())
    if len(keys) == 1:
        return fixed + f'wrk.headers["Authorization"] = "Bearer {keys[0]}"\n' + _LUA_DONE
    table = ", ".join(f'"{k}"' for k in keys)
    return fixed + (
        f"local keys = {{{table}}}\n"
        "local threads, n = 0, 0\n"
        "setup = function(thread) thread:set('offset', threads * 7919); threads = threads + 1 end\n"
        "init = function(args) n = offset or 0 end\n"
        "request = function()\n"
        "  n = n + 1\n"
        '  wrk.headers["Authorization"] = "Bearer " .. keys[(n % #keys) + 1]\n'
        "  return wrk.format(nil, nil, wrk.headers)\n"
        "end\n" + _LUA_DONE
    )


def _wrk(port: int, path: str, keys: list[str], duration_s: float, connections: int, workdir: Path,
         headers: dict[str, str]) -> LoadResult:
    """Run wrk -t2 -c<connections> -d<duration> --latency with a generated Lua script."""
    script = workdir / "load.lua"
    script.write_text(_lua(keys, headers))
    command = ["wrk", "-t2", f"-c{connections}", f"-d{int(duration_s)}s", "--latency", "-s", str(script), f"http://{HOST}:{port}{path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(lines[-1].split(" ", 1)[1])
    return LoadResult(
        tool="wrk",
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        errors_4xx_5xx=r["status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
        bytes_read=r["bytes"],
    )


# -- the fallback -------------------------------------------------------------------------------
class _Tally:
    """Counters shared by the fallback's connections (one event loop, so no lock)."""

    def __init__(self) -> None:
        """Start from zero."""
        self.latencies: list[float] = []
        self.errors_4xx_5xx = 0
        self.bytes_read = 0
        self.errors = 0


async def _connection(port: int, requests: list[bytes], first: int, stop_at: float, tally: _Tally) -> None:
    """Send requests one after another on one connection until stop_at, reconnecting when closed."""
    reader = writer = None
    n = first
    while time.monotonic() < stop_at and len(tally.latencies) < MAX_REQUESTS:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            started = time.perf_counter()
            writer.write(requests[n % len(requests)])
            n += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            close = False
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            tally.bytes_read += len(head) + length
            tally.latencies.append(time.perf_counter() - started)
            if status >= 400:  # as wrk counts them: a 304 is an answer too
                tally.errors_4xx_5xx += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.errors += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _python(port: int, path: str, keys: list[str], duration_s: float, connections: int,
                  headers: dict[str, str]) -> LoadResult:
    """Run `connections` keep-alive connections for duration_s; keys rotate across requests."""
    fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n{fixed}\r\n".encode() for key in keys
    ]
    tally = _Tally()
    started = time.monotonic()
    stop_at = started + duration_s
    tasks = [_connection(port, requests, c * 7919, stop_at, tally) for c in range(connections)]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration_s + 30)
    elapsed = time.monotonic() - started
    latencies = sorted(tally.latencies) or [0.0]

    def pct(p: float) -> float:
        """Return the p-th percentile latency in ms."""
        return 1000 * latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return LoadResult("python-asyncio", len(tally.latencies), elapsed, pct(50), pct(99), tally.errors_4xx_5xx, tally.errors,
                      tally.bytes_read)
