"""Suspected provider incidents: when, within one window, enough tenants and a large enough share of a
provider's integrations fail for reasons that may be the provider's, the fleet suspects the provider.

The detector runs on what every prober records in Redis (store/providers.py), so any number of
probers agree, at O(providers) per tick. An incident starts and ends with one event in the feed of
each tenant that has an integration of the provider at work (one seen later is told when first seen),
each written once, by whichever prober's record Redis tells to.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

from . import reasons
from .model import CorrelationOptions, Integration, Outcome
from .store import Store
from .store.history import event_text
from .store.providers import Providers

log = logging.getLogger("status_service.incidents")

CHECK_EVERY_S = 5.0  # how often a prober asks whether a suspected incident has ended
FORGET_S = 3600.0  # an integration with no result for this long is no longer at work (a slow interval, or gone)


def may_be_providers(outcome: Outcome) -> bool:
    """Return whether a result is a failure that may be the provider's: any reason outside credentials and account."""
    return not outcome.ok and reasons.category(outcome.reason) not in (reasons.CREDENTIALS, reasons.ACCOUNT)


class Incidents:
    """One prober's part in detecting provider incidents: it records its checks' results and learns what the fleet suspects."""

    def __init__(self, store: Store, options: CorrelationOptions, events_s: float | None) -> None:
        self.store, self.options, self.events_s = store, options, events_s  # events_s: None when history is off
        self.suspected: set[str] = set()  # providers the fleet suspects, as last heard
        self.checked_at = 0.0  # time.monotonic() of the next check

    def record(self, results: Iterable[tuple[Integration, Outcome]], now: float) -> None:
        """Record provider checks' results, and announce an incident they start."""
        by_provider: dict[str, list[tuple[str, str, bool]]] = {}
        for integration, outcome in results:
            if integration.probe.provider:
                by_provider.setdefault(integration.probe.provider, []).append(
                    (integration.member, integration.tenant_id, may_be_providers(outcome)))
        self._heard(self._correlate(by_provider, now), now)

    def tick(self, now: float, in_use: Sequence[str]) -> None:
        """Every CHECK_EVERY_S: learn which providers the fleet suspects, and end incidents a window after their last failure."""
        if time.monotonic() < self.checked_at:
            return
        self.checked_at = time.monotonic() + CHECK_EVERY_S
        self._heard(self._correlate({name: [] for name in in_use}, now), now)

    def _correlate(self, by_provider: dict[str, list[tuple[str, str, bool]]], now: float) -> dict[str, tuple[str, list[str]]]:
        o = self.options
        return Providers(self.store).correlate(by_provider, now, o.window_s, o.min_tenants, o.min_share, max(o.window_s, FORGET_S))

    def _heard(self, said: dict[str, tuple[str, list[str]]], now: float) -> None:
        for name, (state, tell) in said.items():
            if state in ("started", "on"):
                self.suspected.add(name)
            else:
                self.suspected.discard(name)
            if tell:
                self._announce(name, state, tell, now)

    def _announce(self, provider: str, state: str, tenants: list[str], now: float) -> None:
        """Write the incident's start (or end) into the feed of each tenant to tell, each once per edge."""
        if state in ("started", "ended"):
            log.warning("provider.incident provider=%s state=%s tenants=%d", provider, "suspected" if state == "started" else "over",
                        len(tenants))
        if self.events_s is None:
            return
        previous, current = ("suspected", "ok") if state == "ended" else ("ok", "suspected")
        text = event_text(now, "provider", None, previous, current, None, {"provider": provider})
        Providers(self.store).announce(tenants, text, round((now - self.events_s) * 1000))
