"""The address policy for untrusted probes: the rules, and the fetcher obeying them on real sockets."""
from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

import pytest
from hypothesis import given, strategies as st

from status_service import policy
from status_service.fetch import Fetcher
from status_service.model import ProbeSpec

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "169.254.169.254", "fe80::1%eth0", "10.0.0.1", "172.16.0.1", "192.168.1.1",
    "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "fc00::1", "192.0.2.1", "240.0.0.1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a00:1",
    "::7f00:1", "::a9fe:a9fe", "::ffff:0:7f00:1", "64:ff9b:1::7f00:1", "64:ff9b:1::808:808", "fec0::1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert policy.address_refusal(address) is not None


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert policy.address_refusal(address) is None


@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_address_is_judged_alike_in_every_ipv6_form(n: int) -> None:
    v4 = ipaddress.IPv4Address(n)
    forms = [
        f"::ffff:{v4}",  # mapped
        str(ipaddress.IPv6Address((0xFFFF0000 << 32) | n)),  # translated
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80))),  # 6to4
        str(ipaddress.IPv6Address(int(policy.NAT64.network_address) | n)),  # NAT64
    ]
    expected = policy.address_refusal(str(v4)) is None
    assert [policy.address_refusal(form) is None for form in forms] == [expected] * len(forms)


@pytest.mark.parametrize("method, url, headers, refused", [
    ("GET", "https://api.example.com/health", ["Authorization"], False),
    ("HEAD", "http://status.example.com/", [], False),
    ("POST", "https://api.example.com/", [], True),
    ("GET", "http://api.example.com/health", ["Authorization"], True),
    ("GET", "http://api.example.com/health?key=x", [], True),
    ("GET", "http://user:pw@api.example.com/health", [], True),
])
def test_only_get_and_head_and_credentials_only_over_https(method: str, url: str, headers: list[str], refused: bool) -> None:
    assert (policy.request_refusal(method, url, headers) is not None) == refused


def resolving_to(address: str):
    """A resolver that answers every .test name with one address, and everything else as the system does."""
    def resolve(host: str, port: int, *args: Any) -> Any:
        return socket.getaddrinfo(address if host.endswith(".test") else host, port, *args)
    return resolve


def test_a_guarded_probe_of_a_loopback_address_never_connects(upstream) -> None:
    outcome = Fetcher().probe(ProbeSpec(url=upstream.url("/p"), guarded=True))
    assert outcome.reason == policy.REASON
    assert upstream.count("/p") == 0
    assert Fetcher().probe(ProbeSpec(url=upstream.url("/p"))).ok  # the same probe from the config file is trusted


@pytest.mark.parametrize("url", ["http://[::1]:9/p", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3:8080/"])
def test_guarded_probes_of_non_public_literals_are_refused_at_once(url: str) -> None:
    started = time.monotonic()
    outcome = Fetcher().probe(ProbeSpec(url=url, guarded=True, timeout_s=3))
    assert outcome.reason == policy.REASON
    assert time.monotonic() - started < 1  # refused, not timed out


def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(upstream) -> None:
    port = upstream.base.rsplit(":", 1)[1]
    fetcher = Fetcher(resolve=resolving_to("127.0.0.1"))  # a public-looking name, rebound to this host
    outcome = fetcher.probe(ProbeSpec(url=f"http://status.provider.test:{port}/p", guarded=True))
    assert outcome.reason == policy.REASON
    assert upstream.count("/p") == 0


def test_a_pooled_connection_a_trusted_probe_opened_is_not_reused_by_a_guarded_one(upstream) -> None:
    port = upstream.base.rsplit(":", 1)[1]
    fetcher = Fetcher(resolve=resolving_to("127.0.0.1"))
    url = f"http://status.provider.test:{port}/p"
    upstream.url("/p")
    assert fetcher.probe(ProbeSpec(url=url)).ok  # trusted: its connection stays in the pool
    outcome = fetcher.probe(ProbeSpec(url=url, guarded=True))
    assert outcome.reason == policy.REASON
    assert upstream.count("/p") == 1


def test_a_guarded_request_the_rules_refuse_is_never_sent(upstream) -> None:
    outcome = Fetcher().probe(ProbeSpec(url=upstream.url("/p") + "?key=x", guarded=True))
    assert outcome.reason == policy.REASON
    outcome = Fetcher().probe(ProbeSpec(url="https://api.example.com/", method="POST", guarded=True))
    assert outcome.reason == policy.REASON
    assert upstream.count("/p") == 0


def test_through_a_proxy_the_target_name_is_checked_as_this_prober_resolves_it(monkeypatch, upstream) -> None:
    for name in ("http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", upstream.base)  # the proxy itself is on a loopback address: allowed
    upstream.url("http://status.provider.test/health")  # a proxy sees the absolute URL as its path
    public = Fetcher(resolve=resolving_to(PUBLIC)).probe(ProbeSpec(url="http://status.provider.test/health", guarded=True))
    assert public.ok, public
    private = Fetcher(resolve=resolving_to("10.0.0.1")).probe(ProbeSpec(url="http://status.provider.test/health", guarded=True))
    assert private.reason == policy.REASON
    assert upstream.count("http://status.provider.test/health") == 1
