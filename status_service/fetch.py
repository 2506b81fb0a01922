"""The only outbound HTTP: one pooled session, a deadline that covers the body, a size cap."""
from __future__ import annotations

import http.cookiejar
import time
import urllib.request
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter

from . import checks
from .model import Outcome, ProbeSpec

READ_SIZE = 65536
USER_AGENT = "status-service-prober/1"


class Fetcher:
    """Probe integrations over one pooled requests.Session, safe to share between threads."""

    def __init__(self, pool_size: int = 64) -> None:
        self.session = requests.Session()
        # No cookie is kept: one tenant's probe must never carry what another's was sent.
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.session.headers["User-Agent"] = USER_AGENT  # lets providers tell our probes apart
        # The environment's proxy settings are read once here rather than on every request (a
        # seventh of a prober's CPU); ~/.netrc is never consulted for credentials.
        self.session.trust_env = False
        self.proxies = {scheme: url for scheme, url in urllib.request.getproxies().items() if scheme != "no"}
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def probe(self, spec: ProbeSpec) -> Outcome:
        """Probe once and judge the result; never raise and never reveal headers or credentials."""
        started = time.monotonic()
        deadline = started + spec.timeout_s

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            response = self.session.request(
                spec.method,
                spec.url,
                headers=dict(spec.headers),
                timeout=(spec.timeout_s, spec.timeout_s),
                stream=True,
                proxies=self._proxies_for(spec.url),
                # Redirects are not followed: requests would carry probe headers (keys) to the new host.
                allow_redirects=False,
            )
            with response:
                body = bytearray()
                while True:
                    # read1 returns what has arrived, so a server that drips bytes meets the deadline.
                    chunk = response.raw.read1(READ_SIZE, decode_content=True)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > spec.max_body_bytes:
                        return Outcome.failed("body_too_large", elapsed_ms())
                    if time.monotonic() > deadline:
                        return Outcome.failed("timeout", elapsed_ms())
            if time.monotonic() > deadline:
                return Outcome.failed("timeout", elapsed_ms())
            return checks.judge(spec, response.status_code, bytes(body), elapsed_ms())
        except Exception as exc:  # every failure becomes a short reason, whatever raised it
            return Outcome.failed(reason_for(exc), elapsed_ms())

    def _proxies_for(self, url: str) -> dict[str, str] | None:
        """Return the proxies to use for a URL, honouring no_proxy."""
        if not self.proxies or urllib.request.proxy_bypass_environment(urlsplit(url).hostname or ""):
            return None
        return self.proxies

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()


def reason_for(exc: BaseException) -> str:
    """Return a short, secret-free reason for an exception raised while probing."""
    if isinstance(exc, (requests.Timeout, u3.TimeoutError)):
        return "timeout"
    if isinstance(exc, (requests.exceptions.SSLError, u3.SSLError)):
        return "tls_error"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy_error"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError, u3.ProtocolError, u3.DecodeError)):
        return "protocol_error"
    if isinstance(exc, requests.ConnectionError):
        return "connection_error"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError)):
        return "invalid_request"
    return "probe_error"
