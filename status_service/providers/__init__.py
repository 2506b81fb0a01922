"""Built-in provider checks: for each provider, the cheapest authenticated request that proves a credential
works without spending credit or generating anything, what its answers mean, and where its status page is.

Each provider is a module of its own (openai.py, discord.py, ...) exposing PROVIDER. Everything here is
pure: the fetcher sends the request a check builds and hands the answer to its provider's judge.
"""
from __future__ import annotations

import email.utils
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Callable, Mapping

from ..model import Outcome

MAX_RETRY_AFTER_S = 3600.0  # a provider's Retry-After is honoured up to an hour: a larger one is a bug or an attack
DEFAULT_MAX_REQUESTS_PER_SECOND = 50.0  # per provider, across every tenant and prober
_SECONDS = re.compile(r"[0-9]{1,40}(\.[0-9]{1,9})?")  # a wait as digits: float() would take "1_0", "nan" and "1e400" too


@dataclass(frozen=True)
class Request:
    """What a check sends: method, path under the base URL, headers (holding the credential), and a body."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # holds the credential
    body: bytes | None = None


@dataclass(frozen=True)
class Provider:
    """One provider: its API's base URL, its status page, the credentials a check needs, its request and judge."""

    name: str
    base_url: str
    status_page: str  # the page's base URL: its JSON is under it
    page_format: str  # statuspage (Atlassian, and incident.io's compatible JSON) or instatus
    component: str  # the page's component that stands for the API ("" : the page's overall status)
    credentials: Mapping[str, tuple[str, ...]]  # field -> its allowed values (() : any non-empty text)
    required: tuple[str, ...]
    request: Callable[[Mapping[str, str]], Request]
    judge: Callable[[int, Mapping[str, str], bytes, int], Outcome]


def body_json(body: bytes) -> Any:
    """Return the JSON of an answer, or None when it is none."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def retry_after(headers: Mapping[str, str], document: Any = None, now: float | None = None) -> float | None:
    """Return how long the provider asks us to wait, in seconds: a Retry-After header (seconds or a date), or a body's retry_after."""
    wait: float | None = None
    named = {name.lower(): value for name, value in headers.items()}
    millis = (named.get("retry-after-ms") or "").strip()  # OpenAI's, finer than Retry-After
    raw = (named.get("retry-after") or "").strip()
    if _SECONDS.fullmatch(millis):
        wait = float(millis) / 1000
    elif _SECONDS.fullmatch(raw):
        wait = float(raw)
    elif raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
            if when.tzinfo is None:  # "-0000": UTC, with no zone said, never this machine's local time
                when = when.replace(tzinfo=timezone.utc)
            wait = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            wait = None
    if wait is None and isinstance(document, dict):
        given = document.get("retry_after")
        # An integer too large for a float is a very long wait, capped like any other.
        wait = MAX_RETRY_AFTER_S if isinstance(given, int) and not isinstance(given, bool) and given > MAX_RETRY_AFTER_S \
            else number(given)
    if wait is None:
        return None
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def failed(reason: str, latency_ms: int, headers: Mapping[str, str] | None = None, document: Any = None,
           balance: float | None = None) -> Outcome:
    """Return a failed outcome; a throttled one carries how long the provider asked us to wait."""
    wait = retry_after(headers or {}, document) if reason in ("rate_limited", "address_blocked") else None
    return Outcome(ok=False, reason=reason, latency_ms=latency_ms, retry_after_s=wait, balance=balance)


def by_status(status: int, headers: Mapping[str, str], document: Any, latency_ms: int) -> Outcome | None:
    """Return the outcome every provider shares for a status (401, 403, 402, 429, 5xx), or None for the provider to judge."""
    if status == 401:
        return failed("invalid_credentials", latency_ms)
    if status == 403:
        return failed("forbidden", latency_ms)
    if status == 402:
        return failed("quota_exhausted", latency_ms)
    if status == 429:
        return failed("rate_limited", latency_ms, headers, document)
    if status >= 500:
        return failed("provider_error", latency_ms)
    if not 200 <= status < 300:
        return failed(f"http_{status}", latency_ms)
    return None


def by_balance(status: int, headers: Mapping[str, str], body: bytes, latency_ms: int, field_name: str) -> Outcome:
    """Return the outcome of a provider that reports the account's balance in a 200's `field_name`: none left is quota_exhausted."""
    document = body_json(body)
    known = by_status(status, headers, document, latency_ms)
    if known is not None:
        return known
    balance = number(document.get(field_name)) if isinstance(document, dict) else None
    if balance is not None and balance <= 0:
        return failed("quota_exhausted", latency_ms, balance=balance)
    return Outcome(ok=True, latency_ms=latency_ms, balance=balance)


def number(value: Any) -> float | None:
    """Return a JSON number as a float, or None for anything else (a boolean, text, NaN, one too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        found = float(value)  # an integer of hundreds of digits overflows here
    except OverflowError:
        return None
    return found if math.isfinite(found) else None


def bearer(key: str) -> tuple[str, str]:
    """Return the Authorization header of a bearer credential."""
    return ("Authorization", f"Bearer {key}")


# Last: each provider's module builds its PROVIDER from the names above.
from . import discord, ideogram, openai, replicate, runway, stability  # noqa: E402

PROVIDERS: dict[str, Provider] = {p.name: p for p in (openai.PROVIDER, discord.PROVIDER, runway.PROVIDER, stability.PROVIDER,
                                                      replicate.PROVIDER, ideogram.PROVIDER)}
