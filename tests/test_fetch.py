"""Outbound HTTP: proxies from the environment, read once, with no_proxy honoured."""
from status_service.fetch import USER_AGENT, Fetcher
from status_service.model import ProbeSpec
from tests.conftest import free_port


def test_http_proxy_from_the_environment_is_used(monkeypatch, upstream) -> None:
    upstream.url("http://status.provider.invalid/health")  # a proxy sees the absolute URL as its path
    monkeypatch.setenv("HTTP_PROXY", upstream.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    outcome = Fetcher().probe(ProbeSpec(url="http://status.provider.invalid/health"))
    assert outcome.ok, outcome
    assert upstream.count("http://status.provider.invalid/health") == 1


def test_no_proxy_hosts_are_reached_directly(monkeypatch, upstream) -> None:
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
