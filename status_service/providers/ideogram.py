"""Ideogram: its free read endpoints (account usage) answer only keys of organization admins, and 404 to
the rest. So the check asks for a price quote (dry_run=true), which is documented as validated and
priced but never generated, stored or billed: any key is proved, and an account out of funds is refused
with 402 (that a dry run refuses it is not confirmed)."""
from __future__ import annotations

import json
from typing import Mapping

from ..model import Outcome
from . import Provider, Request, body_json, by_status

QUOTE = json.dumps({"prompt": "status check", "quality": "medium"}).encode()
PATH = "/v2/image/generate/ideogram-4-5?dry_run=true"


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: a dry-run price quote, the key in Api-Key."""
    return Request("POST", PATH, (("Api-Key", credentials["api_key"]), ("Content-Type", "application/json")), QUOTE)


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Ideogram's answer says: 402 (insufficient_funds, daily_limit) is quota_exhausted, as every provider's 402."""
    return by_status(status, headers, body_json(body), latency_ms) or Outcome(ok=True, latency_ms=latency_ms)


PROVIDER = Provider(
    name="ideogram", base_url="https://api.ideogram.ai", status_page="https://status.ideogram.ai", page_format="statuspage",
    component="", credentials={"api_key": ()}, required=("api_key",), request=request, judge=judge,
)
