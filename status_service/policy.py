"""Where an untrusted probe may go: public addresses only, GET or HEAD, credentials only over https."""
from __future__ import annotations

import ipaddress
from typing import Iterable
from urllib.parse import urlsplit

REASON = "address_refused"  # the probe reason when every address of a guarded probe was refused
METHODS = ("GET", "HEAD")
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix that embeds an IPv4 address
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # a network's own translators (RFC 8215)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded(ip: IPAddress) -> IPAddress:
    """Return the IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), or the address itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        high = int(ip) >> 32
        # NAT64, IPv4-translated (::ffff:0:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d) forms.
        if ip in NAT64 or high == 0xFFFF0000 or (high == 0 and int(ip) > 1):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_refusal(address: str) -> str | None:
    """Return why a guarded probe may not connect to this IP address, or None when it may."""
    try:
        ip = _embedded(ipaddress.ip_address(address.split("%", 1)[0]))  # an IPv6 zone names no other host
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in LOCAL_NAT64):
        return f"{ip} is not a public address"
    for name, refused in (
        ("an unspecified", ip.is_unspecified),  # before private, which 0.0.0.0 and :: also are
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),  # 169.254.169.254, cloud metadata, among them
        ("a private", ip.is_private),
        ("a multicast", ip.is_multicast),
    ):
        if refused:
            return f"{ip} is {name} address"
    if not ip.is_global:  # shared, documentation and reserved ranges
        return f"{ip} is not a public address"
    return None


def addresses_refusal(addresses: Iterable[str]) -> str | None:
    """Return why a name whose addresses are these may not be probed (any refused one), or None."""
    return next((reason for reason in map(address_refusal, addresses) if reason), None)


def request_refusal(method: str, url: str, header_names: Iterable[str]) -> str | None:
    """Return why a guarded probe's request is refused, or None: GET or HEAD, and credentials only over https.

    Headers, query parameters and URL user-info may all carry a provider credential.
    """
    if method.upper() not in METHODS:
        return f"method {method} is not allowed: use {' or '.join(METHODS)}"
    parts = urlsplit(url)
    if parts.scheme != "https" and (any(True for _ in header_names) or parts.query or parts.username or parts.password):
        return "headers, query parameters and user-info are sent only over https"
    return None
