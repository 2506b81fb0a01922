"""The prober process: an APScheduler tick claims due integrations, probes them, records results.

Run it as `python -m status_service.prober`. Any number of probers may share one Redis: each
integration is claimed atomically with a lease, so none is probed twice at once, and a prober
that dies loses its claims when their leases run out.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from apscheduler.schedulers.background import BackgroundScheduler

from . import checks, reasons, report
from .catalog import Catalog
from .cipher import Cipher, CipherError
from .compactor import Compactor
from .dispatcher import Dispatcher
from .fetch import Fetcher
from .metrics import Tally
from .incidents import Incidents
from .pages import Pages
from .model import (
    INVALID_CREDENTIALS_BACKOFF, Integration, Outcome, ProbeSpec, Registry, State, Window, split_member, tenant_fingerprint,
)
from .providers import DEFAULT_MAX_REQUESTS_PER_SECOND
from .registry import ConfigError, load
from .settings import SettingsError, configure_logging, credentials_cipher, from_env, redis_url
from .store import Claim, Fenced, OlderGeneration, Recorded, Store, StoreUnavailable, TenantConflict, connect
from .store.catalog import Catalog as StoredCatalog
from .store.history import History, check_text, event_text
from .store.maintenance import Maintenance
from .store.metrics import Metrics
from .store.providers import Providers
from .store.webhooks import Webhooks

log = logging.getLogger("status_service.prober")

HEARTBEAT_INTERVALS = 3  # a heartbeat stays fresh for this many default probe intervals
LEASE_SLACK_S = 1.0  # a lease outlives a probe's deadline, watchdog and two ticks by at least this
LEASE_SHARE_CAP_S = 15.0  # and by a quarter of its interval, up to this: a long interval holds no claim for hours
FOREIGN_RETRY_S = 5.0  # when to hand back an integration this prober's config does not know
WATCHDOG_GRACE_S = 1.0  # past its deadline plus this, a probe stuck in DNS or headers counts as a timeout
MAX_BACKOFF_S = 30.0
REFILL_FRACTION = 8  # a finished probe claims more work once this share of the workers is free
EMBEDDED_CHECK_S = 5.0  # how often a prober makes sure the embedded Redis runs
STOP_MARGIN_S = 0.25  # on SIGTERM, how long past their deadline running probes may take to land
RECORD_ATTEMPTS = 5  # rounds of recomputing a result that another prober's write overtook
REPORT_BYTES_PER_S = 8 * 1024 * 1024  # a tenant's report is rewritten at most this many bytes a second
RECONCILE_S = 60.0  # how often a prober re-reads every admin API tenant's rev, in case a feed entry was lost
DISPATCH_S = 1.0  # how often a prober's dispatcher looks for events to deliver and deliveries due
METRICS_FLUSH_S = 5.0  # how often a prober adds its counts to the sums in Redis that /metrics shows


@dataclass
class View:
    """What this prober knows of a tenant: its states and report as of a results version."""

    report: report.TenantReport
    incarnation: str = ""  # of the tenant's history in Redis; versions compare only within one
    version: int = -1
    next_write: float = 0.0  # time.monotonic() from which its report may be written again


@dataclass
class InFlight:
    """A probe submitted to the pool; its deadline runs from when a worker starts it."""

    claim: Claim
    integration: Integration
    started: float | None = None  # time.monotonic() when a worker started the probe

    def overdue(self, now: float) -> bool:
        """Return whether the probe has run past its deadline and the watchdog's grace (monotonic now)."""
        return self.started is not None and now > self.started + self.integration.probe.timeout_s + WATCHDOG_GRACE_S


def fingerprint(registry: Registry) -> str:
    """Return a short digest that changes whenever the registry does, probe headers included."""
    return hashlib.sha256(repr(astuple(registry)).encode()).hexdigest()[:16]


def next_due(integration: Integration, claim: Claim, first: bool, now: float, outcome: Outcome | None = None) -> float:
    """Return when to probe again: spread over the interval after the first probe, then keep phase.

    The spread lands in the second half of the interval, so no two probes of one integration are
    ever closer than half an interval. A provider check whose credentials were refused waits ten
    intervals; one the provider throttled waits at least as long as the provider asked.
    """
    probe = integration.probe
    backoff = outcome is not None and probe.backs_off(outcome.reason)
    interval = probe.interval_s * (INVALID_CREDENTIALS_BACKOFF if backoff else 1)
    wait = outcome.retry_after_s if outcome is not None and outcome.retry_after_s else 0.0
    if backoff:
        return now + max(interval, wait)  # from now: the phase of a check that keeps being refused matters to nobody
    if first:
        return max(now + interval * random.uniform(0.5, 1.0), now + wait)
    planned = claim.due_ms / 1000 + interval
    # A late probe keeps the phase if it can; a prober that fell behind fires no catch-up burst.
    return max(planned, now + interval / 2, now + wait)


class Prober:
    """Claims, probes and records; `tick` never blocks on a probe."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        fetcher: Fetcher | None = None,
        prober_id: str | None = None,
        clock: Callable[[], float] | None = None,
        source: Path | None = None,
        environ: Mapping[str, str] | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        self.cipher = cipher  # opens the probes of admin API integrations; without one, the prober ignores them
        self.store = store
        self.stored_catalog = StoredCatalog(store)
        self.tally = Tally()  # probes and deliveries counted since the last flush to Redis
        self.metrics_at = 0.0  # time.monotonic() of the next flush
        self.id = prober_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # On this prober's clock, which follows Redis's: leases and retries agree across probers.
        self.dispatcher = Dispatcher(store, cipher.open if cipher else _no_secrets, self.id, self.tally, lambda: self.clock())
        self.fetcher = fetcher or Fetcher(pool_size=registry.prober.concurrency)
        self.pages = Pages(store, self.fetcher)  # where each provider's page is: set by use()
        self.use(registry)
        self.source = source  # the config file, re-read when it changes or on request
        self.environ = environ if environ is not None else os.environ
        self.source_stamp = self._stamp()
        self.reload_requested = False
        self.recheck: dict[str, str] = {}  # provider checks the file changed -> a digest of the change: made due once seeded
        self.providers_said: tuple[Any, ...] = ()  # what pages and suspicions said when reports last took it
        # Leases and due times follow Redis's clock, which every prober shares: each claim returns
        # it, and this prober's notion of now is its own clock plus the last offset seen. A test
        # passes a clock of its own, which is then used for everything.
        self.given_clock = clock
        self.offset = 0.0
        self.synced = False  # whether the offset has been taken from Redis since start or an outage
        self.clock: Callable[[], float] = clock or (lambda: time.time() + self.offset)
        self.pool = ThreadPoolExecutor(registry.prober.concurrency, thread_name_prefix="probe")
        self.inflight: dict[str, InFlight] = {}
        self.busy = 0  # workers running a probe, including ones the watchdog gave up on
        self.settling = 0  # finished probes whose callbacks are still recording and refilling
        self.finished: list[tuple[InFlight, Outcome, float]] = []
        self.lock = threading.Lock()  # guards inflight and finished, which tick, stop and probes share
        self.refilling = threading.Lock()  # one refill at a time; the others skip rather than wait
        self.flushing = threading.Lock()  # one flush at a time, so a tenant's batch is never split
        self.seeded: str | None = None
        self.backoff_s = 0.0
        self.resume_at = 0.0  # time.monotonic() before which a tick does nothing (Redis backoff)
        self.stopping = False

    def use(self, registry: Registry) -> None:
        """Adopt a registry; what is derived from it is computed here once, not on every tick."""
        self.registry = registry
        self.dispatcher.configure(registry.alerts, {t.id: t.webhooks for t in registry.tenants}, not registry.allow_private_addresses)
        self.fingerprint = fingerprint(registry)
        self.rates = {p.name: p.max_requests_per_second for p in registry.providers}  # each provider's fleet-wide budget
        self.file_providers = {i.probe.provider for i in registry.integrations if i.probe.provider}  # once, not every tick
        self.pages.options = {p.name: p for p in registry.providers}  # a reload may move a provider's status page
        self.incidents = Incidents(self.store, registry.correlation, registry.history.events_s if registry.history.enabled else None)
        self.tenant_prints = {t.id: tenant_fingerprint(t.integrations) for t in registry.tenants}
        self.behind: set[str] = set()  # tenants whose seeded registry differs from this one (logged once)
        # The admin API's integrations: read whole at the first tick, then change by change (follow()).
        self.catalog = Catalog(self.cipher.open if self.cipher else str, guarded=not registry.allow_private_addresses,
                               providers=registry.providers)
        self.feed_at: str | None = None  # the position in the feed of changed tenants; None: read everything
        self.reconcile_at = 0.0  # time.monotonic() of the next re-read of every tenant's rev
        self.unreadable: set[str] = set()  # tenants with a definition this prober cannot decrypt (logged once)
        # Each touched tenant's states and report as of a results version, kept one write at a time.
        self.views: dict[str, View] = {}
        self.dirty: dict[str, float] = {}  # tenant -> time.monotonic() its report may be written again
        self.windows: dict[str, tuple[Window, ...]] = {}  # each tenant's maintenance windows, as last read (none: absent)
        self.windows_version: int | None = None  # of all windows, as last read
        # Every claim is made with the lease the config file's integrations need; one of the admin
        # API's that needs a longer one has its claim extended (see _claim_and_submit).
        self.lease_s = max((self.lease_for(i) for i in registry.integrations), default=self.lease_for(None))

    def compact(self) -> int:
        """Fold the history of the tenants this prober keeps views of; return how many were folded."""
        if not self.registry.history.enabled:
            return 0
        with self.flushing:  # the tick edits the views
            tenants = {t: v.report.integrations[:] for t, v in self.views.items()}
        compactor = Compactor(History(self.store), self.registry.history, self.id)
        try:
            return compactor.run_once(tenants, self.clock())
        except StoreUnavailable:
            return 0  # the tick notices, logs and backs off

    def dispatch(self) -> int:
        """Deliver what is due to webhooks (see dispatcher.py); return how many deliveries were started."""
        try:
            return self.dispatcher.run_once()
        except StoreUnavailable:
            return 0  # the tick notices, logs and backs off

    def lease_for(self, integration: Integration | None) -> float:
        """Return how long a claim of this integration (None: one with the default probe) is held.

        It outlives the probe's deadline, its watchdog, two ticks and a share of its interval, so a
        busy prober records before its lease ends.
        """
        probe = integration.probe if integration is not None else ProbeSpec(url="")
        share = min(LEASE_SHARE_CAP_S, max(LEASE_SLACK_S, probe.interval_s / 4))
        return probe.timeout_s + WATCHDOG_GRACE_S + 2 * self.registry.prober.tick_s + share

    def integration(self, member: str) -> Integration | None:
        """Return the integration with this schedule name, from the admin API or the config file.

        The admin API's first: a tenant it made is its own, even if an older config file declares it.
        """
        if split_member(member)[0] in self.catalog.tenants:
            return self.catalog.integration(member)
        return self.registry.integration(member)

    def integrations_of(self, tenant_id: str) -> tuple[Integration, ...] | None:
        """Return a tenant's integrations in report order, or None if this prober knows no such tenant."""
        made = self.catalog.tenants.get(tenant_id)
        if made is not None:  # as in integration()
            return tuple(made.integrations.values())
        tenant = self.registry.tenant(tenant_id)
        return tenant.integrations if tenant is not None else None

    def tick(self) -> None:
        """Run one round: heartbeat, seed if Redis lost its data, record results, claim and start probes."""
        if time.monotonic() < self.resume_at:
            return
        try:
            if self.given_clock is None and not self.synced:
                # Before the heartbeat and the seed, which are stamped with it; claims keep it right.
                self.offset = self.store.time() - time.time()
                self.synced = True
            now = self.clock()
            # Under the flush lock, so no result of a removed integration is written after its removal.
            with self.flushing:
                if self.reload_requested or self._stamp() != self.source_stamp:
                    self.reload()
                self.ensure_seeded(now)
                for member, change in self.recheck.items():  # each change by one prober of the fleet: all reload the file
                    self.stored_catalog.make_due_once(member, change)
                self.recheck = {}
                self.follow(now)
                self.read_windows(now)
            # Only after a good seed: a prober that cannot seed must not make /readyz say ready.
            self.store.heartbeat(self.id, now, HEARTBEAT_INTERVALS * self.registry.default_interval_s)
            self.reap(time.monotonic())
            self.flush()
            with self.flushing:
                self.write_reports(now)  # reports held back to spare bandwidth, now due
            self.flush_metrics()
            in_use = self._providers_in_use()
            self.pages.tick(now, in_use)
            self.incidents.tick(now, sorted(in_use))
            self._news_of_providers(now)
            if not self.stopping:
                self.start_probes(wait=True)  # a fresh time: the steps above may have taken a while
        except StoreUnavailable as exc:
            if not self.backoff_s:  # one line when Redis goes away and one when it is back, not one a try
                log.warning("redis.unavailable prober=%s error=%s", self.id, exc)
            self.backoff_s = min(MAX_BACKOFF_S, max(1.0, self.backoff_s * 2))
            self.resume_at = time.monotonic() + self.backoff_s
            self.synced = False  # take Redis's time again when it is back
            log.debug("redis.retry prober=%s in_s=%.0f", self.id, self.backoff_s)
            return
        if self.backoff_s:
            log.info("redis.recovered prober=%s", self.id)
            self.backoff_s = 0.0

    def ensure_seeded(self, now: float) -> None:
        """Write the registry to Redis when this prober has not, or when Redis lost it."""
        mine = self.fingerprint
        if self.seeded == mine:
            # Seeded by this prober, or refused as older: again only if Redis lost it, or holds an
            # older file's registry (another prober's, seeded while this one was not looking).
            seeded = self.store.seeded_generation()
            if seeded is not None and seeded >= self.registry.generation:
                return
        owners = {d: t.id for t in self.registry.tenants for d in t.key_digests}
        members = {i.member: 0.0 for i in self.registry.integrations}  # a new one is due at once, by any clock
        tenant_ids = [t.id for t in self.registry.tenants]
        try:
            admins = {digest: admin_id for admin_id, digest in self.registry.admin_keys}
            kept = self.registry.history
            settings = {"allow_private_addresses": self.registry.allow_private_addresses,
                        "max_integrations_per_tenant": self.registry.max_integrations_per_tenant,
                        "history": {"enabled": kept.enabled, "raw_s": kept.raw_s, "five_minute_s": kept.five_minute_s,
                                    "hourly_s": kept.hourly_s},
                        "metrics": {"tenant_label": self.registry.metrics_tenant_label}}
            file_prints = {t.id: self.tenant_prints[t.id] for t in self.registry.tenants}
            removed = self.store.seed(mine, self.registry.generation, owners, file_prints, members, admins, settings)
        except (OlderGeneration, TenantConflict) as exc:
            # This file must not replace what Redis holds. The prober goes on probing; what differs
            # from the seeded registry, it does not write.
            if isinstance(exc, OlderGeneration):
                log.warning("registry.older_generation prober=%s file=%d seeded=%d", self.id, self.registry.generation, exc.newest)
            else:
                log.error("registry.conflict prober=%s tenant=%s: made through the admin API; rename it in the file", self.id, exc.tenant_id)
            self.seeded = mine
            self.dispatcher.prune = False  # an older file's webhooks are not the ones to go by
            return
        self.dispatcher.prune = True
        # The file's webhooks get the events from now on (an existing group keeps its place); a tenant
        # without webhooks is read by no group, so webhooks it gets later start from then, not a backlog.
        Webhooks(self.store).ensure_groups(t.id for t in self.registry.tenants if t.webhooks)
        Webhooks(self.store).drop_groups(t.id for t in self.registry.tenants if not t.webhooks)
        # Every report afresh, so removals show at once; Redis may also have lost what views hold.
        self.views = {}
        self.sync({t: ("", -1, {}) for t in tenant_ids}, now)
        self.write_reports(now, force=True)
        self.seeded = mine
        log.info(
            "registry.seeded prober=%s tenants=%d integrations=%d removed=%d",
            self.id, len(tenant_ids), len(members), len(removed),
        )

    def read_windows(self, now: float, force: bool = False) -> None:
        """Re-read the maintenance windows when any changed, and rewrite the reports they change or a window opens or closes."""
        touched = set()
        version = Maintenance(self.store).version()
        if force or version != self.windows_version:
            self.windows_version = version
            touched = self.take_windows(list(self.views), now)
        touched |= {t for t in self.windows if t in self.views and self.views[t].report.next_edge() <= now}
        if touched:
            # A new results version (a write of nothing) lets the report be rewritten: the body renders the edge.
            self.sync({t: (self.views[t].incarnation, self.views[t].version, {}) for t in touched}, now)

    def take_windows(self, tenant_ids: list[str], now: float) -> set[str]:
        """Read these tenants' maintenance windows and re-render the views they changed; return those tenants."""
        changed = set()
        for tenant_id, found in Maintenance(self.store).windows(tenant_ids).items():
            if found == self.windows.get(tenant_id, ()):
                continue
            changed.add(tenant_id)
            if found:
                self.windows[tenant_id] = found
            else:
                self.windows.pop(tenant_id, None)
            if tenant_id in self.views:
                self.views[tenant_id].report.set_windows(found, now)
        return changed

    def follow(self, now: float, tenant_ids: Iterable[str] = ()) -> None:
        """Bring the admin API's integrations up to date: the tenants the feed names, and `tenant_ids`.

        The first call reads every tenant; each later one reads only what changed, so a change
        costs the same whatever the size of the registry. Every RECONCILE_S, every tenant's rev
        is checked again, in case a change's feed entry was lost.
        """
        if self.cipher is None:
            return
        touched = set(tenant_ids)
        if self.feed_at is None or time.monotonic() >= self.reconcile_at:
            at = self.stored_catalog.feed_end()  # before reading: a change made meanwhile is read again, harmlessly
            touched |= set(self.stored_catalog.tenant_ids()) | set(self.catalog.tenants)
            self.feed_at, self.reconcile_at = at, time.monotonic() + RECONCILE_S
        else:
            named, at, missed = self.stored_catalog.read_feed(self.feed_at)
            if missed:
                log.warning("registry.feed_missed prober=%s: re-reading every tenant", self.id)
                self.reconcile_at = 0.0
                return self.follow(now, touched)
            touched |= set(named)
            self.feed_at = at
        if not touched:
            return
        known = self.catalog.known()
        changes = self.stored_catalog.read({t: known.get(t, ("", "")) for t in touched})
        scheduled: list[str] = []
        rebuilt: list[str] = []  # tenants whose views are built anew
        edited: dict[str, list[str]] = {}  # tenant -> ids new or changed, in views edited in place
        for tenant_id, change in changes.items():
            applied = self.catalog.apply(tenant_id, change)
            if applied is not None and applied.unreadable:
                if tenant_id not in self.unreadable:  # once: it is read again with each change and each minute
                    log.error("registry.unreadable prober=%s tenant=%s integrations=%s: give this prober every key "
                              "of STATUS_SECRET_KEY in use", self.id, tenant_id, ",".join(applied.unreadable[:10]))
                self.unreadable.add(tenant_id)
            elif applied is not None:
                self.unreadable.discard(tenant_id)
            if applied is None:
                continue
            scheduled += [i.member for i in applied.fresh]
            self.behind.discard(tenant_id)
            made = self.catalog.tenants.get(tenant_id)
            if made is None:  # deleted
                self.views.pop(tenant_id, None)
                self.dirty.pop(tenant_id, None)
                self.tenant_prints.pop(tenant_id, None)
                continue
            self.tenant_prints[tenant_id] = made.rev
            view = self.views.get(tenant_id)
            if applied.whole or view is None:
                self.views.pop(tenant_id, None)
                rebuilt.append(tenant_id)
                continue
            # In place, so a change costs the same in a tenant of 10,000 integrations as in one of 10.
            for integration_id in applied.removed:
                view.report.remove(integration_id)
            for integration in applied.fresh:
                view.report.put(integration, now)
            edited[tenant_id] = [i.id for i in applied.fresh]
        # One that a crash left out of the schedule is added; the others keep their due times.
        self.stored_catalog.schedule_missing(scheduled)
        # A result of the new definition may have landed before this prober learnt of it.
        for tenant_id, states in self.store.states(edited).items():
            self.views[tenant_id].report.apply(states, now)
        # A view edited in place writes no report now: the change edited the stored one already.
        if rebuilt:
            self.sync({t: ("", -1, {}) for t in rebuilt}, now)  # every state, and a report from it

    def reload(self) -> None:
        """Re-read the config file; keep the current registry if the new one is invalid."""
        self.reload_requested = False
        self.source_stamp = self._stamp()
        if self.source is None:
            return
        try:
            registry = load(self.source, self.environ)
        except ConfigError as exc:
            log.error("registry.reload_failed %s", exc)
            return
        if registry.prober != self.registry.prober:
            # The pools and the tick are sized at start; half-applying new sizes would be worse.
            log.warning("registry.reload prober options changed; they take effect on restart")
            registry = replace(registry, prober=self.registry.prober)
        if fingerprint(registry) == self.fingerprint:
            return  # the same registry: keep the views and the reports they hold back
        # A provider check given new credentials (or a new provider) is checked at once: it may be
        # backing off bad ones for ten intervals, and the customer wants to know now.
        old = self.registry
        # Named by the file's generation too: a switch back to a key used before is a change of its own.
        self.recheck.update({i.member: hashlib.sha256(repr((i.member, registry.generation, astuple(i.probe))).encode()).hexdigest()[:32]
                             for i in registry.integrations
                             if i.probe.provider and (was := old.integration(i.member)) is not None and was.probe != i.probe})
        self.use(registry)
        self.seeded = None
        log.info("registry.reloaded tenants=%d integrations=%d", len(registry.tenants), len(registry.integrations))

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.source.stat() if self.source else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat else None

    def start_probes(self, now: float | None = None, wait: bool = False) -> None:
        """Claim as many due integrations as there are free workers and start probing them.

        A finished probe's refill skips when another refill is under way; the tick waits for it and
        then claims, so a tick never passes over work that has fallen due.
        """
        if not self.refilling.acquire(blocking=wait):
            return
        try:
            self._claim_and_submit(self.clock() if now is None else now)
        finally:
            self.refilling.release()

    def _claim_and_submit(self, now: float) -> None:
        with self.lock:
            free = self.registry.prober.concurrency - self.busy
        foreign = []
        at, claims = self.store.claim(None if self.given_clock is None else now, self.lease_s, free)
        if self.given_clock is None and at is not None:
            self.offset = at - time.time()
        unknown = [c.member for c in claims if self.integration(c.member) is None]
        if unknown:
            # Made through the admin API a moment ago, most likely: catch up now rather than hand it back.
            with self.flushing:
                self.follow(now, {split_member(member)[0] for member in unknown})
        known = [(c, self.integration(c.member)) for c in claims]
        longer = {c.member: c.lease_ms + int((self.lease_for(i) - self.lease_s) * 1000)
                  for c, i in known if i is not None and self.lease_for(i) > self.lease_s}
        kept = self.store.extend([(c, longer[c.member]) for c, _ in known if c.member in longer]) if longer else set()
        later = self._over_budget(known, now)
        orphans = self.stored_catalog.orphans([c.member for c, i in known if i is None]) if unknown else set()
        self.stored_catalog.forget((c.member, c.lease_ms) for c, _ in known if c.member in orphans)  # removed: a crash or race left it
        for claim, integration in known:
            if integration is None:
                if claim.member not in orphans:
                    # Registered by a prober with a newer or other config: hand it back for one that knows it.
                    foreign.append((claim, now + FOREIGN_RETRY_S))
                continue
            if claim.member in longer:
                if claim.member not in kept:
                    continue  # removed or made due again meanwhile: not ours any more
                claim = replace(claim, lease_ms=longer[claim.member])
            if claim.member in later:  # over its provider's budget: handed back, due when there is room
                foreign.append((claim, later[claim.member]))
                continue
            entry = InFlight(claim, integration)
            with self.lock:
                self.inflight[claim.member] = entry
                self.busy += 1
            future = self.pool.submit(self._probe, entry)
            future.add_done_callback(lambda f, e=entry: self._done(e, f))
        self.store.reschedule(foreign)

    def _news_of_providers(self, now: float) -> None:
        """When what the pages say or what the fleet suspects changes, rewrite the reports this prober holds of the tenants it concerns."""
        said = (frozenset(self.incidents.suspected),
                tuple(sorted((name, p.get("indicator"), p.get("description")) for name, p in self.pages.said.items())))
        if said == self.providers_said:
            return
        with self.flushing:
            touched = [t for t, view in self.views.items() if any(i.probe.provider for i in view.report.integrations)]
            if touched:  # a new results version (a write of nothing) lets each report be rewritten, as for a window's edge
                self.sync({t: (self.views[t].incarnation, self.views[t].version, {}) for t in touched}, now)
        self.providers_said = said  # only once written: after a Redis failure, the next tick tries again

    def _trouble(self) -> set[str]:
        """Return the providers whose failures are theirs now: their page reports trouble, or the fleet suspects them."""
        return self.incidents.suspected | self.pages.troubled()

    def _providers_in_use(self) -> set[str]:
        """Return the providers some integration this prober knows checks: the file's and the admin API's."""
        found = set(self.file_providers)
        for tenant in self.catalog.tenants.values():
            found.update(i.probe.provider for i in tenant.integrations.values() if i.probe.provider)
        return found

    def _over_budget(self, known: list[tuple[Claim, Integration | None]], now: float) -> dict[str, float]:
        """Return the claimed provider checks over their provider's fleet-wide budget, each with when to try it again.

        One call per provider in the claim takes what the budget has; the rest are spread over
        the seconds the budget needs to cover them.
        """
        by_provider: dict[str, list[str]] = {}
        for claim, integration in known:
            if integration is not None and integration.probe.provider:
                by_provider.setdefault(integration.probe.provider, []).append(claim.member)
        if not by_provider:
            return {}
        rates = {name: self.rates.get(name, DEFAULT_MAX_REQUESTS_PER_SECOND) for name in by_provider}
        granted = Providers(self.store).take({name: (len(members), rates[name]) for name, members in by_provider.items()}, now)
        return {member: now + (n + 1) / rates[name]
                for name, members in by_provider.items() for n, member in enumerate(members[granted.get(name, 0):])}

    def _probe(self, entry: InFlight) -> Outcome:
        entry.started = time.monotonic()
        outcome = self.fetcher.probe(entry.integration.probe)
        self.tally.probe(entry.integration.type, outcome.reason, time.monotonic() - entry.started)
        return outcome

    def flush_metrics(self, force: bool = False) -> None:
        """Add what this prober counted to the sums in Redis, every METRICS_FLUSH_S (or now, with `force`)."""
        if not force and time.monotonic() < self.metrics_at:
            return
        self.metrics_at = time.monotonic() + METRICS_FLUSH_S
        taken = self.tally.take()
        try:
            Metrics(self.store).add(taken)
        except StoreUnavailable:
            self.tally.give_back(taken)  # carried by the next flush
            raise

    def _done(self, entry: InFlight, future: Future[Outcome]) -> None:
        if future.cancelled():  # a probe that never started, as the prober stops
            with self.lock:
                self.busy -= 1
            return
        outcome = future.result()  # Fetcher.probe never raises
        with self.lock:
            self.busy -= 1
            self.settling += 1
            if self.inflight.get(entry.claim.member) is entry:  # not already reaped as a timeout
                del self.inflight[entry.claim.member]
                self.finished.append((entry, outcome, self.clock()))
            free = self.registry.prober.concurrency - self.busy
        # Record and refill now rather than at the next tick, in batches to spare Redis round trips.
        try:
            if not self.stopping and free >= max(1, self.registry.prober.concurrency // REFILL_FRACTION):
                self.flush(wait=False)
                self.start_probes()
        except StoreUnavailable:
            pass  # the next tick notices, logs and backs off
        finally:
            with self.lock:
                self.settling -= 1

    def reap(self, now: float) -> None:
        """Count probes stuck past their deadline as timeouts (monotonic now); their threads finish later.

        A backstop: the fetcher closes a probe's socket at its deadline, so this should not fire.
        """
        at = self.clock()
        with self.lock:
            for member, entry in list(self.inflight.items()):
                if entry.overdue(now):
                    del self.inflight[member]
                    self.finished.append((entry, Outcome.failed("timeout"), at))

    def flush(self, wait: bool = True) -> None:
        """Record finished probes, rebuild the affected tenants' reports, and reschedule the claims.

        One flush runs at a time; with wait=False a caller skips it when another is running.
        """
        if not self.flushing.acquire(blocking=wait):
            return
        try:
            self._flush()
        finally:
            self.flushing.release()

    def _flush(self) -> None:
        with self.lock:
            batch, self.finished = self.finished, []
        # A result for an integration removed by a reload while it was probed is dropped.
        batch = [item for item in batch if self.integration(item[0].claim.member) is not None]
        if not batch:
            return
        try:
            first, outdated = self._record(batch)
            now = self.clock()
            self.incidents.record(((e.integration, o) for e, o, _ in batch if e.integration.member not in outdated), now)
            if outdated:
                # Probed by a definition changed since: learn the new one, and probe that now, not an interval later.
                self.follow(now, {split_member(m)[0] for m in outdated})
                outdated = {m for m in outdated if self.integration(m) is not None}
            self.store.reschedule(
                (e.claim, now if e.integration.member in outdated else next_due(e.integration, e.claim, e.integration.member in first, now, o))
                for e, o, _ in batch
            )
        except StoreUnavailable:
            with self.lock:
                self.finished = batch + self.finished  # keep them for the next try: recording twice is harmless
            raise

    def _record(self, batch: list[tuple[InFlight, Outcome, float]]) -> tuple[set[str], set[str]]:
        """Apply each outcome to the newest state, fenced by its claim; return first-time and outdated members.

        Outdated: probed by an admin API definition that has changed (or gone) since; nothing was written.

        The thresholds are applied here, to the state this prober's view holds; Redis refuses the write
        if another prober wrote that integration meanwhile, sends what changed, and it is recomputed.
        """
        pending = {(e.integration.tenant_id, e.integration.id): (e, outcome, at) for e, outcome, at in batch}
        trouble = self._trouble()
        first: set[str] = set()
        outdated: set[str] = set()
        for _ in range(RECORD_ATTEMPTS):
            writes: dict[str, tuple[str, int, dict[str, tuple[int, State]]]] = {}
            befores: dict[tuple[str, str], State | None] = {}
            kept: dict[str, dict[str, tuple[str, str]]] = {}  # what history keeps with each state, if it is written
            for (tenant_id, iid), (entry, outcome, at) in pending.items():
                view = self.views.get(tenant_id)
                before = befores[tenant_id, iid] = view.report.states.get(iid) if view else None
                spec = entry.integration.probe
                alerts = self.registry.alerts
                paused = any(w.covers(entry.integration, at) for w in self.windows.get(tenant_id, ()))
                state = checks.advance(before, outcome, spec, at, entry.claim.fence, (alerts.flap_changes, alerts.flap_window_s), paused)
                known = (view.incarnation, view.version) if view else ("", -1)
                writes.setdefault(tenant_id, (*known, {}))[2][iid] = (before.fence if before else 0, state)
                if self.registry.history.enabled:
                    # Inside a maintenance window its checks are marked and its changes are no alert (see checks.transition).
                    change = checks.transition(before, state)
                    if change is not None:  # as /status says it, provider trouble included
                        change["reason_category"] = reasons.category_while(state.reason, entry.integration.probe.provider in trouble)
                    event = "" if change is None else event_text(
                        state.checked_at, "integration", {"id": iid, "type": entry.integration.type}, change.pop("previous"),
                        change.pop("current"), state.reason, change)
                    kept.setdefault(tenant_id, {})[iid] = (check_text(state, outcome.ok, paused), event)
            revs: dict[str, dict[str, str]] = {}
            for entry, _, _ in pending.values():
                if entry.integration.rev:
                    revs.setdefault(entry.integration.tenant_id, {})[entry.integration.id] = entry.integration.rev
            recorded = self.sync(writes, self.clock(), revs, kept)
            for tenant_id, result in recorded.items():
                if isinstance(result, Fenced):  # the tenant's seeded registry is another, or lost: write nothing
                    gone = [pending.pop((tenant_id, iid)) for iid in writes[tenant_id][2]]
                    if result.lost and self._lost_alone(tenant_id):
                        self.seeded = None  # seed it again at the next tick
                        log.warning("registry.tenant_lost prober=%s tenant=%s dropped=%d", self.id, tenant_id, len(gone))
                    elif tenant_id not in self.behind:
                        self.behind.add(tenant_id)
                        log.warning("registry.behind prober=%s tenant=%s dropped=%d", self.id, tenant_id, len(gone))
                    continue
                for iid in writes[tenant_id][2]:
                    if iid in result.conflicts:
                        continue  # the view now holds the newer state: recompute on top of it
                    entry, outcome, _ = pending.pop((tenant_id, iid))
                    if iid in result.outdated:
                        outdated.add(entry.integration.member)
                    elif iid not in result.dropped:
                        before = befores[tenant_id, iid]
                        if before is None:
                            first.add(entry.integration.member)
                        self._log_probe(entry.integration, outcome, before, result.states[iid])
            if not pending:
                break
        else:
            log.warning("record.contended dropped=%d", len(pending))  # a newer result keeps each of them
        self.write_reports(self.clock())
        return first, outdated

    def _lost_alone(self, tenant_id: str) -> bool:
        """Return whether a tenant's data was lost while the seeded registry still has it, and ours may seed it.

        A tenant a newer registry removed is gone too, but is not to be brought back.
        """
        seeded = self.store.seeded_generation()
        return seeded is not None and seeded <= self.registry.generation and self.store.is_registered(tenant_id)

    def sync(
        self, writes: Mapping[str, tuple[str, int, Mapping[str, tuple[int, State]]]], now: float,
        revs: Mapping[str, Mapping[str, str]] | None = None, kept: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
    ) -> dict[str, Recorded | Fenced]:
        """Write states (and the history `kept` with them), bring each tenant's view up to the version written, and mark its report due.

        A tenant maps to Fenced when the seeded registry of it is not this prober's: nothing was written.
        """
        options = self.registry.history
        keep = (_ms(now - options.raw_s), _ms(now - options.events_s)) if kept else (0, 0)
        recorded = self.store.record(writes, self.tenant_prints, revs, kept, keep)
        for tenant_id, result in recorded.items():
            if isinstance(result, Fenced):
                continue
            view = self.views.get(tenant_id)
            if view is None or result.full:
                integrations = self.integrations_of(tenant_id)
                if integrations is None:
                    continue
                view = self.views[tenant_id] = View(report.TenantReport(integrations, self.windows.get(tenant_id, ())))
            view.report.apply(result.states, now)
            view.incarnation, view.version = result.incarnation, result.version
            if any(iid not in result.states for iid in result.conflicts):
                view.version = -1  # a state this view holds is gone from Redis: read them all next time
            self.dirty.setdefault(tenant_id, view.next_write)
        return recorded

    def write_reports(self, now: float, force: bool = False) -> None:
        """Store the reports that changed, each at most once per REPORT_BYTES_PER_S share of its size."""
        ready = time.monotonic()
        due = [t for t, at in self.dirty.items() if force or at <= ready]
        if due:
            # As they are now: every prober renders a report from the same windows, so none undoes another's.
            self.take_windows(due, now)
        reports, statuses, counts = [], {}, {}
        trouble = self._trouble()
        for tenant_id in due:
            del self.dirty[tenant_id]
            view = self.views.get(tenant_id)
            if view is None:
                continue
            view.report.notes = self.pages.notes(view.report.integrations, self.incidents.suspected)
            view.report.set_suspected(trouble, now)
            body = view.report.body(now)
            # A large report is rewritten less often: Redis and every web worker move it whole.
            view.next_write = ready + len(body) / REPORT_BYTES_PER_S
            stale = view.report.stale_at
            reports.append((tenant_id, view.version, body, stale, report.next_stale(stale, now)))
            statuses[tenant_id] = view.report.statuses()
            counts[tenant_id] = view.report.tally()
        options = self.registry.history
        if options.enabled:
            self.store.put_reports(reports, self.tenant_prints, statuses, now, _ms(now - options.events_s), counts)
        else:
            self.store.put_reports(reports, self.tenant_prints, counts=counts)

    def _log_probe(self, i: Integration, outcome: Outcome, before: State | None, after: State) -> None:
        log.debug(
            "probe.done tenant=%s integration=%s ok=%s reason=%s ms=%s",
            i.tenant_id, i.id, str(outcome.ok).lower(), outcome.reason, outcome.latency_ms,
        )
        if before is None or before.status is not after.status:
            log.info(
                "integration.changed tenant=%s integration=%s from=%s to=%s reason=%s",
                i.tenant_id, i.id, before.status.value if before else "unknown", after.status.value, after.reason,
            )

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop claiming, let running probes finish within their deadline, record them, release the rest."""
        self.stopping = True
        with self.refilling:  # a refill under way finishes its submissions first; none starts after
            pass
        with self.lock:
            longest = max((e.integration.probe.timeout_s for e in self.inflight.values()), default=0.0)
        # The running probes' own deadlines (at most one probe timeout), and a moment for them to land.
        wait_s = longest + STOP_MARGIN_S if timeout_s is None else timeout_s
        give_up = time.monotonic() + wait_s
        while time.monotonic() < give_up:
            with self.lock:
                if not self.inflight:
                    break
            time.sleep(0.02)
        now = self.clock()
        with self.lock:
            leftover, self.inflight = list(self.inflight.values()), {}
        try:
            self.flush()
            with self.flushing:
                self.write_reports(self.clock(), force=True)
            self.store.reschedule((e.claim, now) for e in leftover)
            self.store.forget_prober(self.id)
            self.flush_metrics(force=True)
        except StoreUnavailable:
            log.warning("prober.stop redis unavailable; unfinished claims come back when their leases expire")
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pages.close()
        self.fetcher.close()
        self.dispatcher.close()
        log.info("prober.stopped prober=%s released=%d", self.id, len(leftover))

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until no probe is running, then flush; for tests and tools that drive ticks by hand.

        A finished probe's callback may still claim more (a refill): that counts as running too, so
        nothing this prober does races with what the caller does next.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.reap(time.monotonic())
            with self.lock:
                if not self.inflight and not self.settling:
                    break
            time.sleep(0.01)
        self.flush()
        with self.flushing:
            self.write_reports(self.clock(), force=True)
        self.flush_metrics(force=True)


def _ms(at: float) -> int:
    return max(0, int(at * 1000))


def _no_secrets(token: str) -> str:
    raise CipherError("this prober has no STATUS_SECRET_KEY")


def main() -> int:
    """Run a prober until SIGTERM or SIGINT; reload its config on SIGHUP."""
    try:
        settings = from_env(os.environ)
        registry = load(settings.config_path, os.environ)
        secrets = credentials_cipher(settings)
    except (SettingsError, ConfigError) as exc:
        print(f"status-service prober: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # a skipped 1 s tick is not news
    url = redis_url(settings)
    # Made on first use, so a Redis Cluster that is down at start is an outage to wait out, not an exit.
    store = Store(lambda: connect(url, settings.redis_timeout_s, settings.redis_cluster), settings.key_prefix, settings.redis_timeout_s)
    prober = Prober(registry, store, source=Path(settings.config_path), cipher=secrets)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if not stop_requested.is_set():
            log.info("prober.stopping signal=%s", signal.Signals(signum).name)
        stop_requested.set()  # a second signal changes nothing

    def request_reload(_signum: int, _frame: object) -> None:
        prober.reload_requested = True  # picked up by the next tick, which owns the registry

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    scheduler = BackgroundScheduler()
    # The first tick runs at once: unknown should last seconds, not a tick.
    scheduler.add_job(prober.tick, "interval", seconds=registry.prober.tick_s, max_instances=1, coalesce=True,
                      next_run_time=datetime.now(timezone.utc))
    # Beside the tick, on a thread and a pool of its own: a slow receiver never delays a claim.
    scheduler.add_job(prober.dispatch, "interval", seconds=DISPATCH_S, max_instances=1, coalesce=True)
    # Beside the tick, on its own thread: folding history never delays a claim.
    scheduler.add_job(prober.compact, "interval", seconds=min(15.0, registry.history.compact_every_s), max_instances=1, coalesce=True)
    if settings.redis_url is None:
        # The embedded Redis has no supervisor but its users: bring it back (from its AOF) if it died.
        scheduler.add_job(redis_url, "interval", args=[settings], seconds=EMBEDDED_CHECK_S, max_instances=1)
    log.info("prober.started prober=%s tenants=%d integrations=%d", prober.id, len(registry.tenants), len(registry.integrations))
    scheduler.start()
    # With a timeout: a signal that the kernel hands to another thread runs its Python handler only
    # once the main thread wakes, and a wait without one may never wake.
    while not stop_requested.wait(0.5):
        pass
    scheduler.shutdown(wait=True)  # lets a running tick finish before stop() takes over
    prober.stop()
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now: a probe thread stuck past its deadline (a server dripping headers) must not hold us.
    os._exit(code)
