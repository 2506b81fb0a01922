"""Stability AI: GET /v1/user/balance reads the account's credits; it spends nothing."""
from __future__ import annotations

from typing import Mapping

from ..model import Outcome
from . import Provider, Request, bearer, body_json, by_status, failed, number


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: the key as a bearer token."""
    return Request("GET", "/v1/user/balance", (bearer(credentials["api_key"]),))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Stability's answer says: credits at or below 0 is quota_exhausted; the balance is credits."""
    document = body_json(body)
    known = by_status(status, headers, document, latency_ms)
    if known is not None:
        return known
    balance = number(document.get("credits")) if isinstance(document, dict) else None
    if balance is not None and balance <= 0:
        return failed("quota_exhausted", latency_ms, balance=balance)
    return Outcome(ok=True, latency_ms=latency_ms, balance=balance)


PROVIDER = Provider(
    name="stability", base_url="https://api.stability.ai", status_page="https://status.stability.ai", page_format="statuspage",
    component="", credentials={"api_key": ()}, required=("api_key",), request=request, judge=judge,
)
