"""The dispatcher: delivers each tenant's events to its webhooks, beside the prober, on threads of its own.

Each prober process runs one. Events come from the tenant's events feed through a Redis consumer
group, so any number of dispatchers share the work and none hands an event out twice; each event
becomes one job per webhook that wants it, and a job is taken under a lease, sent, and settled:
delivered, retried later with backoff and jitter, or dead-lettered when its retry window ends.
Delivery is at least once: a dispatcher that dies mid-send leaves the job to come back when its
lease ends, so a receiver deduplicates by the payload's `id`.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

from . import webhooks
from .cipher import CipherError
from .fetch import Fetcher
from .metrics import Tally
from .model import DEFAULT_MAX_BODY_BYTES, AlertOptions, ProbeSpec, Webhook
from .store import Store
from .store.webhooks import Job, Webhooks

log = logging.getLogger("status_service.dispatcher")

DELIVERY_TIMEOUT_S = 10.0  # a 2xx within this counts as delivered: the hard deadline of the whole exchange
LEASE_S = DELIVERY_TIMEOUT_S + 5.0  # a taken job comes back to the others if it is not settled by then
WORKERS = 32  # deliveries in flight at once per dispatcher (threads waiting on receivers: cheap)
PER_WEBHOOK = 2  # of those, at most this many to one webhook: it takes 16 hung receivers to fill them
RECLAIM_S = 30.0  # how often events another dispatcher left pending are looked for
USER_AGENT = "status-service-webhooks/1"


class Dispatcher:
    """Reads events, fans them out to jobs, and delivers them; `run_once` never blocks on a receiver."""

    def __init__(self, store: Store, open_secret: Callable[[str], str], consumer: str, tally: Tally,
                 clock: Callable[[], float] = time.time) -> None:
        self.webhooks = Webhooks(store)
        self.open_secret = open_secret
        self.consumer = consumer
        self.tally = tally
        self.clock = clock
        self.configure(AlertOptions(), {}, True)
        self.fetcher = Fetcher(pool_size=WORKERS)  # its own connections and resolver threads: probes never wait for it
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="deliver")
        self.lock = threading.Lock()
        self.inflight: dict[tuple[str, str], int] = {}  # (tenant, webhook) -> deliveries under way
        self.reclaim_at = 0.0
        self.unreadable: set[tuple[str, str]] = set()  # webhooks whose secret no key opens (logged once)

    def configure(self, options: AlertOptions, file_hooks: Mapping[str, tuple[Webhook, ...]], guarded: bool) -> None:
        """Take the config file's settings and webhooks; `guarded`: the admin API's webhooks reach public addresses only."""
        self.options = options
        self.file_hooks = {t: {h.id: h for h in hooks} for t, hooks in file_hooks.items() if hooks}
        self.guarded = guarded
        self.prune = False  # whether this config file is the one seeded: only then are other webhooks' queues dropped

    def run_once(self) -> int:
        """Fan out new events and start the deliveries that are due; return how many were started."""
        now = self.clock()
        tenants = sorted(set(self.file_hooks) | set(self.webhooks.hooked()))
        if not tenants:
            return 0
        reclaim = time.monotonic() >= self.reclaim_at
        if reclaim:
            self.reclaim_at = time.monotonic() + RECLAIM_S
        read = self.webhooks.read(tenants, self.consumer, reclaim, self.file_hooks)
        subscribed, ready = {}, {}
        for tenant_id, found in read.items():
            subscribed[tenant_id], ready[tenant_id] = self._hooks(tenant_id, found.made)
            if self.prune:  # queues of webhooks the config file dropped (or renamed: a new URL is a new id)
                for gone in found.queues - subscribed[tenant_id].keys():
                    if self.webhooks.drop_orphan(tenant_id, gone):
                        log.info("webhook.queue_dropped tenant=%s webhook=%s: no longer configured", tenant_id, gone)
        fan: dict[str, list[tuple[str, list[str]]]] = {}
        for tenant_id, found in read.items():
            for event_id, text in found.events:
                body = json.loads(text.split(" ", 1)[1]) if text else {}
                kind = webhooks.event_type(body) if text else None
                # An event no webhook wants is acknowledged all the same.
                fan.setdefault(tenant_id, []).append((event_id, [h for h, (events, categories) in subscribed[tenant_id].items()
                                                                 if webhooks.wanted(events, categories, kind, body)]))
        self.webhooks.fan_out(fan, now)
        started = 0
        # Only the webhooks whose secrets this prober opens: the others' jobs wait, untouched, for a prober that can.
        for job in self.webhooks.take(self._room(ready), now, LEASE_S):
            with self.lock:
                key = (job.tenant_id, job.webhook_id)
                self.inflight[key] = self.inflight.get(key, 0) + 1
            self.pool.submit(self._deliver, job, ready[job.tenant_id][job.webhook_id])
            started += 1
        return started

    def _room(self, subscribed: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, int]]:
        """Return how many jobs to take per tenant and webhook: what each webhook may add in flight, within what is free.

        Tenants and their webhooks come in a random order, so that when little is free it is shared.
        """
        with self.lock:
            free = WORKERS - sum(self.inflight.values())
            room: dict[str, dict[str, int]] = {}
            for tenant_id in random.sample(list(subscribed), len(subscribed)):
                for hook in random.sample(list(subscribed[tenant_id]), len(subscribed[tenant_id])):
                    n = min(free, PER_WEBHOOK - self.inflight.get((tenant_id, hook), 0))
                    if n > 0:
                        room.setdefault(tenant_id, {})[hook] = n
                        free -= n
        return room

    def _hooks(self, tenant_id: str, made: Mapping[str, dict]) -> tuple[dict[str, tuple[tuple[str, ...], tuple[str, ...]]], dict[str, Webhook]]:
        """Return a tenant's webhooks: the event types and reason categories each wants (empty: all), and those whose secrets this prober can open.

        A webhook whose secret no key of this prober opens still gets its jobs: another prober may
        hold the key and send them.
        """
        file_hooks = self.file_hooks.get(tenant_id, {})
        subscribed = {h.id: (h.events, h.categories) for h in file_hooks.values()}
        ready = dict(file_hooks)
        for hook_id, definition in made.items():
            subscribed[hook_id] = (tuple(definition.get("events", ())), tuple(definition.get("categories", ())))
            try:
                url, secret = self.open_secret(definition["url"]), self.open_secret(definition["secret"])
            except CipherError:
                if (tenant_id, hook_id) not in self.unreadable:
                    log.error("webhook.unreadable tenant=%s webhook=%s: give this prober every key of STATUS_SECRET_KEY in use",
                              tenant_id, hook_id)
                    self.unreadable.add((tenant_id, hook_id))
                continue
            events, categories = subscribed[hook_id]
            ready[hook_id] = Webhook(hook_id, url, secret, events, guarded=self.guarded, categories=categories)
        return subscribed, ready

    def _deliver(self, job: Job, hook: Webhook) -> None:
        try:
            self._send(job, hook)
        except Exception:  # a bug or a Redis outage here must not end the pool's thread; the lease brings the job back
            log.exception("webhook.deliver_failed tenant=%s webhook=%s", job.tenant_id, job.webhook_id)
        finally:
            with self.lock:
                key = (job.tenant_id, job.webhook_id)
                self.inflight[key] -= 1
                if not self.inflight[key]:
                    del self.inflight[key]

    def _send(self, job: Job, hook: Webhook) -> None:
        if not job.event:  # the feed trimmed it: nothing left to send
            self.webhooks.settle(job, "done")
            return
        at_ms, _, raw = job.event.partition(" ")
        body = json.loads(raw)
        data = webhooks.payload(job.event_id, webhooks.event_type(body) or "", int(at_ms) / 1000, job.tenant_id, body)
        signed_at = int(self.clock())  # each attempt is signed afresh
        spec = ProbeSpec(
            url=hook.url, method="POST", timeout_s=DELIVERY_TIMEOUT_S, max_body_bytes=DEFAULT_MAX_BODY_BYTES, guarded=hook.guarded,
            headers=(("Content-Type", "application/json"), ("User-Agent", USER_AGENT), ("Status-Event-Id", job.event_id),
                     (webhooks.SIGNATURE_HEADER, webhooks.signature(hook.secret, signed_at, data))),
        )
        outcome = self.fetcher.probe(spec, data)
        now = self.clock()
        if outcome.ok:
            self.webhooks.settle(job, "done")
            self.tally.delivery("delivered")
            return
        attempts = job.attempts + 1
        due = now + webhooks.retry_delay(attempts, self.options.first_retry_s)
        if due > job.first_ms / 1000 + self.options.retry_s:
            self.webhooks.settle(job, "dead", job.state(n=attempts, err=outcome.reason, dead_at=round(now * 1000)), now)
            self.tally.delivery("dead")
            log.warning("webhook.dead tenant=%s webhook=%s event=%s attempts=%d reason=%s",
                        job.tenant_id, job.webhook_id, job.event_id, attempts, outcome.reason)
            return
        self.webhooks.settle(job, "retry", job.state(n=attempts, err=outcome.reason), due)
        self.tally.delivery("failed")
        log.info("webhook.retry tenant=%s webhook=%s event=%s attempts=%d reason=%s in_s=%.1f",
                 job.tenant_id, job.webhook_id, job.event_id, attempts, outcome.reason, due - now)

    def close(self) -> None:
        """Stop: deliveries under way finish within their deadline; what is not settled comes back after its lease."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
