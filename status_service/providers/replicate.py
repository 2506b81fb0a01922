"""Replicate: GET /v1/account reads the token's account; it spends nothing."""
from __future__ import annotations

import re
from typing import Mapping

from ..model import Outcome
from . import Provider, Request, bearer, body_json, by_status

RESETS_IN = re.compile(r"resets in ~?([0-9]{1,5})s")


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: the API token as a bearer token."""
    return Request("GET", "/v1/account", (bearer(credentials["api_token"]),))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Replicate's answer says: 401 a bad token, 402 no credit, 429 the pace (its detail says when it resets)."""
    document = body_json(body)
    if status == 429 and isinstance(document, dict) and isinstance(document.get("detail"), str):
        resets = RESETS_IN.search(document["detail"])  # "Request was throttled. Your rate limit resets in ~30s."
        if resets and "retry_after" not in document:
            document = {**document, "retry_after": int(resets.group(1))}
    return by_status(status, headers, document, latency_ms) or Outcome(ok=True, latency_ms=latency_ms)


PROVIDER = Provider(
    name="replicate", base_url="https://api.replicate.com", status_page="https://www.cloudflarestatus.com", page_format="statuspage",
    component="", credentials={"api_token": ()}, required=("api_token",), request=request, judge=judge,
)
