"""Outbound HTTP: no state shared between probes, no headers carried elsewhere, proxies read once."""
from status_service.fetch import USER_AGENT, Fetcher
from status_service.model import ProbeSpec
from tests.conftest import free_port


def test_http_proxy_from_the_environment_is_used(monkeypatch, upstream) -> None:
    upstream.url("http://status.provider.invalid/health")  # a proxy sees the absolute URL as its path
    for name in ("http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", upstream.base)
    outcome = Fetcher().probe(ProbeSpec(url="http://status.provider.invalid/health"))
    assert outcome.ok, outcome
    assert upstream.count("http://status.provider.invalid/health") == 1


def test_no_proxy_hosts_are_reached_directly(monkeypatch, upstream) -> None:
    for name in ("http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    outcome = Fetcher().probe(ProbeSpec(url=upstream.url("/direct")))
    assert outcome.ok, outcome
    assert upstream.headers["/direct"]["User-Agent"] == USER_AGENT


def test_netrc_credentials_are_never_added(monkeypatch, tmp_path, upstream) -> None:
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert Fetcher().probe(ProbeSpec(url=upstream.url("/plain"))).ok
    assert "Authorization" not in upstream.headers["/plain"]


def test_a_cookie_one_probe_was_sent_never_reaches_another(upstream) -> None:
    fetcher = Fetcher()
    assert fetcher.probe(ProbeSpec(url=upstream.url("/login", headers={"Set-Cookie": "session=TENANT-A; Path=/"}))).ok
    assert fetcher.probe(ProbeSpec(url=upstream.url("/other"))).ok
    assert "Cookie" not in upstream.headers["/other"]


def test_redirects_are_not_followed_so_headers_stay_with_their_host(upstream) -> None:
    target = upstream.url("/elsewhere")
    spec = ProbeSpec(url=upstream.url("/moved", status=302, headers={"Location": target}), headers=(("X-Api-Key", "k"),))
    outcome = Fetcher().probe(spec)
    assert (outcome.ok, outcome.reason) == (False, "http_302")
    assert upstream.count("/elsewhere") == 0
