"""Discord (Midjourney runs on it): GET /api/v10/users/@me reads the token's own user, once per interval.

A bot token is sent as "Bot <token>". A user token is sent bare: automating a user account may break
Discord's terms of service, which is the customer's call; the check makes one cheap read per interval.
Discord wants a "DiscordBot (url, version)" User-Agent, and its Cloudflare answers an address it
blocks with code 40333: that is our address refused, never the token.
"""
from __future__ import annotations

from typing import Mapping

from ..model import Outcome
from . import Provider, Request, body_json, by_status, failed

USER_AGENT = "DiscordBot (https://github.com/status-service, 1.0)"
CLOUDFLARE_BLOCK = 40333  # Cloudflare's "internal network error": this address is blocked for a while


def request(credentials: Mapping[str, str]) -> Request:
    """Return the check's request: "Bot <token>" for a bot token, the bare token for a user's."""
    token = credentials["token"]
    value = token if credentials.get("token_type", "bot") == "user" else f"Bot {token}"
    return Request("GET", "/api/v10/users/@me", (("Authorization", value), ("User-Agent", USER_AGENT)))


def judge(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int) -> Outcome:
    """Return what Discord's answer says of the token; a 429 carries retry_after (seconds) in its body."""
    document = body_json(body)
    if isinstance(document, dict) and document.get("code") == CLOUDFLARE_BLOCK:
        return failed("address_blocked", latency_ms, headers, document)
    return by_status(status, headers, document, latency_ms) or Outcome(ok=True, latency_ms=latency_ms)


PROVIDER = Provider(
    name="discord", base_url="https://discord.com", status_page="https://discordstatus.com", page_format="statuspage",
    component="API", credentials={"token": (), "token_type": ("bot", "user")}, required=("token",), request=request, judge=judge,
)
