"""Runway: GET /v1/organization reads the organization's tier and credit balance; it spends nothing."""
from __future__ import annotations

from typing import Mapping

from ..model import Outcome
from . import Provider, Request, bearer, body_json, by_status, failed, number

API_VERSION = "2024-11-06"  # X-Runway-Version: the API version the check speaks


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: the key as a bearer token, with the API version Runway requires."""
    return Request("GET", "/v1/organization", (bearer(credentials["api_key"]), ("X-Runway-Version", API_VERSION)))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Runway's answer says: a 200 with no credit left is quota_exhausted; the balance is creditBalance."""
    document = body_json(body)
    known = by_status(status, headers, document, latency_ms)
    if known is not None:
        return known
    balance = number(document.get("creditBalance")) if isinstance(document, dict) else None
    if balance is not None and balance <= 0:
        return failed("quota_exhausted", latency_ms, balance=balance)
    return Outcome(ok=True, latency_ms=latency_ms, balance=balance)


PROVIDER = Provider(
    name="runway", base_url="https://api.dev.runwayml.com", status_page="https://status.runwayml.com", page_format="statuspage",
    component="Public API", credentials={"api_key": ()}, required=("api_key",), request=request, judge=judge,
)
