"""The compactor: folds each tenant's raw checks into rollups and series points, once, whichever prober does it."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from . import rollup
from .model import HistoryOptions, Integration
from .store import StoreUnavailable
from .store.history import FIVE_MINUTES, HOUR, MINUTE, History

log = logging.getLogger(__name__)

SETTLE_S = 2.0  # most checks land within this of their time (a flush, a tick); a later one is folded in again (the late mark)
LOCK_S = 60.0


@dataclass
class Compactor:
    """Compacts the tenants a prober knows, each at most every `options.compact_every_s`."""

    history: History
    options: HistoryOptions
    holder: str  # this prober's id, for the lock

    def run_once(self, tenants: Mapping[str, Sequence[Integration]], now: float) -> int:
        """Compact every tenant that is due; return how many were compacted."""
        done = 0
        for tenant_id, integrations in tenants.items():
            try:
                done += self.compact(tenant_id, integrations, now)
            except StoreUnavailable:
                raise
            except Exception:  # a tenant's bad data must not stop the others' history
                log.exception("history.compact_failed tenant=%s", tenant_id)
        return done

    def compact(self, tenant_id: str, integrations: Sequence[Integration], now: float) -> bool:
        """Fold one tenant's checks up to now - SETTLE_S into points and rollups, if due and not taken."""
        if not integrations:
            return False
        cursor, late, began = self.history.cursor(tenant_id)
        end = now - SETTLE_S
        if cursor is not None and late is None and end - cursor < self.options.compact_every_s:
            return False
        if not self.history.lock(tenant_id, self.holder, LOCK_S):
            return False
        try:
            return self._compact(tenant_id, integrations, (cursor, late, began), now, end)
        finally:
            self.history.unlock(tenant_id)

    def _compact(self, tenant_id: str, integrations: Sequence[Integration], marks: tuple[float | None, ...],
                 now: float, end: float) -> bool:
        """Fold [cursor, end) onto what is folded already; after a late check, the hours from its own afresh."""
        cursor, late, began = marks
        ids = [i.id for i in integrations]
        longest = max(i.probe.stale_after_s for i in integrations)
        oldest = now - self.options.raw_s + longest  # raw checks before this are gone: nothing to fold there
        if began is None:
            first = [cs[0].at for cs in self.history.checks(tenant_id, ids, oldest).values() if cs]
            if not first:
                return False  # nothing checked yet: history begins with the first check
            began = max(min(first), oldest)
        if cursor is None:
            start = began
        elif late is not None:  # what was folded from its hour on is replaced whole
            start = max(_floor(max(min(cursor, late), oldest), HOUR), began)
        else:
            start = max(cursor, oldest)
        if end <= start:
            return False
        hour = _floor(start, HOUR)  # coarser buckets that start holds half-folded are merged with what is kept
        raw = self.history.checks(tenant_id, ids, start - longest)
        tracks = [rollup.Track(i.id, i.type, i.probe.stale_after_s, tuple(raw.get(i.id, ()))) for i in integrations]
        rows: list[tuple[str, float, str]] = []
        trims: dict[str, float] = {}
        for scope, fresh in rollup.scope_points(tracks, start, end, MINUTE).items():
            minutes = rollup.merge_points(self.history.points(tenant_id, scope, MINUTE, hour, start) + fresh, MINUTE)
            for size in (MINUTE, FIVE_MINUTES, HOUR):
                name = f"s{size}:{scope}"
                rows += [(name, p.start, p.encode()) for p in rollup.merge_points(minutes, size) if p.start >= _floor(start, size)]
                trims[name] = now - self.options.keep_s(size)
        kept = self.history.stored_buckets(tenant_id, ids, hour, start)
        for track in tracks:
            fives = rollup.merge_buckets(kept.get(track.id, []) + rollup.integration_buckets(track, start, end, FIVE_MINUTES), FIVE_MINUTES)
            for size in (FIVE_MINUTES, HOUR):
                name = f"r{size}:{track.id}"
                rows += [(name, b.start, b.encode()) for b in rollup.merge_buckets(fives, size) if b.start >= _floor(start, size)]
                trims[name] = now - self.options.keep_s(size)
        written = self.history.write(tenant_id, cursor, end, late, began, rows, trims)
        log.debug("history.compacted tenant=%s from=%.0f to=%.0f written=%s", tenant_id, start, end, written)
        return written


def _floor(at: float, size_s: float) -> float:
    return math.floor(at / size_s) * size_s
