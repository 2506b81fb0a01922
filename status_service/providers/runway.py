"""Runway: GET /v1/organization reads the organization's tier and credit balance; it spends nothing."""
from __future__ import annotations

from typing import Mapping

from ..model import Outcome
from . import Provider, Request, bearer, by_balance

API_VERSION = "2024-11-06"  # X-Runway-Version: the API version the check speaks


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: the key as a bearer token, with the API version Runway requires."""
    return Request("GET", "/v1/organization", (bearer(credentials["api_key"]), ("X-Runway-Version", API_VERSION)))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Runway's answer says: a 200 with no credit left is quota_exhausted; the balance is creditBalance."""
    return by_balance(status, headers, body, latency_ms, "creditBalance")


PROVIDER = Provider(
    name="runway", base_url="https://api.dev.runwayml.com", status_page="https://status.runwayml.com", page_format="statuspage",
    component="Public API", credentials={"api_key": ()}, required=("api_key",), request=request, judge=judge,
)
