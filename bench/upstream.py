"""A fake provider: answers every GET after a fixed latency with a healthy Statuspage body, and counts hits.

Run as `python -m bench.upstream --port P --latency 0.05`; it listens on 127.0.0.1 only.
  /_stats          {"total": hits}
  /_stats?hits=1   {"total": hits, "hits": {path: [epoch seconds, ...]}}
  /_reset          forget every hit
Every other path is a probe target: counted, then answered 200 after the latency, keep-alive.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict

BODY = b'{"status": {"indicator": "none"}}'
MAX_HEADER_BYTES = 16384


class Upstream:
    """Per-path hit timestamps and the HTTP/1.1 connection handler."""

    def __init__(self, latency_s: float) -> None:
        """Answer after latency_s; no hits yet."""
        self.latency_s = latency_s
        self.total = 0
        self.hits: dict[str, list[float]] = defaultdict(list)

    def control(self, target: str) -> bytes:
        """Answer a /_stats or /_reset request."""
        path, _, query = target.partition("?")
        if path == "/_reset":
            self.total = 0
            self.hits.clear()
            return b'{"reset": true}'
        document: dict = {"total": self.total}
        if "hits=1" in query:
            document["hits"] = self.hits
        return json.dumps(document).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until the client closes it."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEADER_BYTES:
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = (lines[0].split(" ") + ["", "", ""])[:3]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                close = headers.get("connection", "").lower() == "close"
                if target.startswith("/_"):
                    body = self.control(target)
                else:
                    self.total += 1
                    self.hits[target].append(time.time())
                    await asyncio.sleep(self.latency_s)
                    body = BODY
                if method == "HEAD":
                    body = b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body)
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def serve(port: int, latency_s: float) -> None:
    """Listen on 127.0.0.1:port until the process is terminated."""
    upstream = Upstream(latency_s)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=1024, limit=MAX_HEADER_BYTES * 2)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.latency))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
