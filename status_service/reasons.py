"""Pure: which of six categories a probe's reason belongs to, so a customer can tell a bad key from an outage."""
from __future__ import annotations

CREDENTIALS, ACCOUNT, THROTTLED, PROVIDER, NETWORK, CONFIG = "credentials", "account", "throttled", "provider", "network", "config"
CATEGORIES = (CREDENTIALS, ACCOUNT, THROTTLED, PROVIDER, NETWORK, CONFIG)

# Every reason a probe or a provider check gives, by category (the README's table is this one).
BY_REASON = {
    "invalid_credentials": CREDENTIALS, "forbidden": CREDENTIALS,
    "quota_exhausted": ACCOUNT, "low_balance": ACCOUNT,
    "rate_limited": THROTTLED, "address_blocked": THROTTLED,
    "provider_error": PROVIDER,
    "timeout": NETWORK, "connection_error": NETWORK, "tls_error": NETWORK, "proxy_error": NETWORK, "protocol_error": NETWORK,
    "invalid_json": CONFIG, "unexpected_body": CONFIG, "body_too_large": CONFIG, "invalid_request": CONFIG,
    "address_refused": CONFIG, "probe_error": CONFIG,
}
# A generic probe's http_<status>: what the status says, as a provider check would read it.
_BY_STATUS = {401: CREDENTIALS, 403: CREDENTIALS, 402: ACCOUNT, 429: THROTTLED}


def category_while(reason: str | None, provider_trouble: bool) -> str | None:
    """Return a reason's category; while its provider has trouble (an incident on its page, or suspected), a failure that
    may be the provider's (anything but credentials and account) is the provider's."""
    found = category(reason)
    return PROVIDER if provider_trouble and found not in (None, CREDENTIALS, ACCOUNT) else found


def category(reason: str | None) -> str | None:
    """Return the category of a failure's reason; None for no failure (healthy, not checked yet, stale, maintenance)."""
    if reason is None:
        return None
    found = BY_REASON.get(reason)
    if found is not None:
        return found
    if reason.startswith("http_") and reason[5:].isdigit():
        status = int(reason[5:])
        return _BY_STATUS.get(status) or (PROVIDER if status >= 500 else CONFIG)  # another 4xx: the probe asks wrongly
    return None
