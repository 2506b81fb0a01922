"""Stability AI: GET /v1/user/balance reads the account's credits; it spends nothing."""
from __future__ import annotations

from typing import Mapping

from ..model import Outcome
from . import Provider, Request, bearer, by_balance


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: the key as a bearer token."""
    return Request("GET", "/v1/user/balance", (bearer(credentials["api_key"]),))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Stability's answer says: credits at or below 0 is quota_exhausted; the balance is credits."""
    return by_balance(status, headers, body, latency_ms, "credits")


PROVIDER = Provider(
    name="stability", base_url="https://api.stability.ai", status_page="https://status.stability.ai", page_format="statuspage",
    component="", credentials={"api_key": ()}, required=("api_key",), request=request, judge=judge,
)
