"""The providers' status pages, polled once per provider by the whole fleet, and what they mean for a tenant's report."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Collection, Iterable, Sequence

from . import report, statuspage
from .fetch import Answer, Fetcher
from .model import Integration, ProbeSpec, ProviderOptions
from .providers import PROVIDERS
from .store import Store, StoreUnavailable
from .store.providers import Providers

log = logging.getLogger("status_service.pages")

READ_EVERY_S = 5.0  # each prober reads what the pages said this often
PAGE_TIMEOUT_S = 5.0
PAGE_MAX_BYTES = 2 * 2**20


class Pages:
    """One prober's part in watching the status pages: it polls those the fleet leaves to it, and reads what all said."""

    def __init__(self, store: Store, fetcher: Fetcher, providers: Sequence[ProviderOptions] = ()) -> None:
        self.store, self.fetcher = store, fetcher
        self.options = {p.name: p for p in providers}  # the prober sets them from each registry it adopts
        self.said: dict[str, dict[str, str]] = {}  # provider -> its page's last word, as read from Redis
        self.read_at = 0.0  # time.monotonic() of the next read
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="pages")  # a slow page delays no probe

    def tick(self, now: float, in_use: Iterable[str]) -> None:
        """Every READ_EVERY_S: claim and poll the pages of providers in use that are due, and read what every page said."""
        if time.monotonic() < self.read_at:
            return
        self.read_at = time.monotonic() + READ_EVERY_S
        names = sorted(set(in_use) & self.options.keys())
        shared = Providers(self.store)
        for name in names:
            if shared.claim_page(name, self.options[name].status_page_interval_s):  # by one prober of the fleet
                self.pool.submit(self._poll, name, now)
        self.said = shared.pages(names)

    def _poll(self, name: str, now: float) -> None:
        """Fetch one page and keep what it says; a page that cannot be read is unknown, never down."""
        option, provider = self.options[name], PROVIDERS[name]
        url = option.status_page + statuspage.PATHS[provider.page_format]
        try:
            got = self.fetcher.exchange(ProbeSpec(url=url, timeout_s=PAGE_TIMEOUT_S, max_body_bytes=PAGE_MAX_BYTES))
            readable = isinstance(got, Answer) and got.status == 200
            state = statuspage.parse(provider.page_format, got.body, option.status_component) if readable else None
        except Exception:  # whatever broke, the page is unknown now: never the last word it said
            log.exception("page.poll_failed provider=%s", name)
            state = None
        said = {"indicator": state.indicator if state else "unknown", "description": state.description if state else "",
                "url": option.status_page, "checked_at": report.iso(now)}
        try:
            Providers(self.store).put_page(name, said)
        except StoreUnavailable:
            pass  # the lease lapses and another poll writes it
        if state is None:
            log.info("page.unreadable provider=%s", name)

    def troubled(self) -> set[str]:
        """Return the providers whose status page reports trouble now."""
        return {name for name, said in self.said.items() if said.get("indicator") in statuspage.TROUBLE}

    def notes(self, integrations: Iterable[Integration], suspected: Collection[str] = ()) -> dict[str, dict[str, Any]]:
        """Return type -> provider_status for the types whose provider has trouble: its page reports it, or the fleet suspects it."""
        out: dict[str, dict[str, Any]] = {}
        for integration in integrations:
            provider = integration.probe.provider
            if not provider or integration.type in out:
                continue
            said = self.said.get(provider, {})
            troubled = said.get("indicator") in statuspage.TROUBLE
            if troubled or provider in suspected:
                out[integration.type] = {"indicator": said.get("indicator", "unknown"), "description": said.get("description", ""),
                                         "url": said.get("url") or self.options[provider].status_page, "checked_at": said.get("checked_at"),
                                         **({"suspected": True} if provider in suspected else {})}
        return out

    def close(self) -> None:
        """Stop polling."""
        self.pool.shutdown(wait=False, cancel_futures=True)
