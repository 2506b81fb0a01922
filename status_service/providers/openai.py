"""OpenAI (DALL-E): GET /v1/models lists the models a key may use; it costs nothing and generates nothing."""
from __future__ import annotations

from typing import Mapping

from ..model import Outcome
from . import Provider, Request, bearer, body_json, by_status, failed

# Errors that mean the account, not the pace: no credit left, or a spend or usage limit reached. Mostly
# 429s; billing_hard_limit_reached has been seen as a 400, so they are read whatever the status.
QUOTA_TYPES = {"insufficient_quota"}
QUOTA_CODES = {"insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded", "billing_not_active",
               "project_spend_limit_exceeded", "organization_usage_limit_exceeded", "billing_hard_limit_reached"}


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: the key as a bearer token."""
    return Request("GET", "/v1/models", (bearer(credentials["api_key"]),))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what OpenAI's answer says of the key: its error's type and code tell quota from pace."""
    document = body_json(body)
    error = document.get("error") if isinstance(document, dict) else None
    error = error if isinstance(error, dict) else {}
    kind, code = str(error.get("type") or ""), str(error.get("code") or "")
    if status in (400, 429) and (kind in QUOTA_TYPES or code in QUOTA_CODES or code.startswith("billing_")
                                 or code.endswith("_spend_limit_exceeded")):
        return failed("quota_exhausted", latency_ms)
    return by_status(status, headers, document, latency_ms) or Outcome(ok=True, latency_ms=latency_ms)


PROVIDER = Provider(
    name="openai", base_url="https://api.openai.com", status_page="https://status.openai.com", page_format="statuspage",
    component="API", credentials={"api_key": ()}, required=("api_key",), request=request, judge=judge,
)
