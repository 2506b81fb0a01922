"""The compactor: folds each tenant's raw checks into rollups and series points, once, whichever prober does it."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from . import rollup
from .model import HistoryOptions, Integration
from .store import StoreUnavailable
from .store.history import DAY, FIVE_MINUTES, HOUR, MINUTE, PACK, History, Marks, packed, size_of

log = logging.getLogger(__name__)

SETTLE_S = 5.0  # most checks land within this of their time (a flush, a tick); a later one is folded in again (the late mark)
LOCK_S = 30.0  # a pass takes milliseconds to seconds; a prober killed mid-pass holds it this long


@dataclass
class Compactor:
    """Compacts the tenants a prober knows, each at most every `options.compact_every_s`."""

    history: History
    options: HistoryOptions
    holder: str  # this prober's id, for the lock

    def run_once(self, tenants: Mapping[str, Sequence[Integration]], now: float) -> int:
        """Compact every tenant that is due; return how many were compacted."""
        done = 0
        marks = self.history.marks(list(tenants))  # one round trip, however many tenants
        for tenant_id, integrations in tenants.items():
            try:
                done += self.compact(tenant_id, integrations, now, marks[tenant_id])
            except StoreUnavailable:
                raise
            except Exception:  # a tenant's bad data must not stop the others' history
                log.exception("history.compact_failed tenant=%s", tenant_id)
        return done

    def compact(self, tenant_id: str, integrations: Sequence[Integration], now: float, marks: Marks | None = None) -> bool:
        """Fold one tenant's checks up to now - SETTLE_S into points and rollups, if due and not taken."""
        marks = marks or self.history.marks([tenant_id])[tenant_id]
        end = math.floor((now - SETTLE_S) * 1000) / 1000  # a whole ms, as the cursor is kept: no check on both sides
        if marks.cursor is not None and marks.late is None and end - marks.cursor < self.options.compact_every_s:
            return False
        if not self.history.lock(tenant_id, self.holder, LOCK_S):
            return False
        try:
            # Read again under the lock: another prober may have folded it since the marks were read.
            return self._compact(tenant_id, integrations, self.history.marks([tenant_id])[tenant_id], now, end)
        finally:
            self.history.unlock(tenant_id, self.holder)

    def _compact(self, tenant_id: str, integrations: Sequence[Integration], marks: Marks, now: float, end: float) -> bool:
        """Fold [cursor, end) onto what is folded already; after a late check, the hours from its own afresh."""
        trims = {f"*{kind}{size}": now - self.options.keep_s(size) for kind in "sr" for size in (MINUTE, FIVE_MINUTES, HOUR)}
        if marks.cursor is None or _floor(marks.cursor, HOUR) != _floor(end, HOUR):  # once an hour is enough
            # Streams are trimmed as they are written; a quiet one is written, and so trimmed, seldom.
            trims.update({"~events": now - self.options.events_s, **{f"~checks:{i.id}": now - self.options.raw_s for i in integrations}})
        if not integrations:  # nothing to fold; what it had is still trimmed
            return self.history.write(tenant_id, marks, max(end, marks.cursor or end), marks.began or end, [], trims)
        cursor, late, began = marks.cursor, marks.late, marks.began
        ids = [i.id for i in integrations]
        oldest = now - self.options.raw_s + max(i.probe.stale_after("invalid_credentials") for i in integrations)  # raw checks before are gone
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
        # A check written into [start, end) from here on is marked late, and this fold's write refused.
        self.history.folding(tenant_id, end, LOCK_S)
        # What start leaves half-folded is merged with what is kept: the packs it falls in are rewritten whole.
        hour, day = _floor(start, HOUR), _floor(start, DAY)
        raw = self.history.checks(tenant_id, ids, start)
        tracks = [rollup.Track(i.id, i.type, i.probe.stale_after_s, tuple(raw.get(i.id, ())), bool(i.probe.provider)) for i in integrations]
        fresh_points = rollup.scope_points(tracks, start, end, MINUTE)
        hourly = [f"s{HOUR}:{scope}" for scope in fresh_points] + [f"r{HOUR}:{i}" for i in ids]  # packed by day
        finer = [f"s{size}:{scope}" for scope in fresh_points for size in (MINUTE, FIVE_MINUTES)] + [f"r{FIVE_MINUTES}:{i}" for i in ids]
        kept = {**self.history.packs(tenant_id, finer, hour, start), **self.history.packs(tenant_id, hourly, day, start)}
        rows: list[tuple[str, float, str]] = []
        for scope, fresh in fresh_points.items():
            minutes = rollup.merge_points(kept[f"s{MINUTE}:{scope}"] + fresh, MINUTE)
            for size in (MINUTE, FIVE_MINUTES, HOUR):
                rows += self._refold(f"s{size}:{scope}", kept, rollup.merge_points(minutes, size), start)
        for track in tracks:
            fives = rollup.merge_buckets(kept[f"r{FIVE_MINUTES}:{track.id}"]
                                         + rollup.integration_buckets(track, start, end, FIVE_MINUTES), FIVE_MINUTES)
            rows += self._refold(f"r{FIVE_MINUTES}:{track.id}", kept, fives, start)
            hours = [b.summarized() for b in rollup.merge_buckets(fives, HOUR)]
            rows += self._refold(f"r{HOUR}:{track.id}", kept, hours, start)
        written = self.history.write(tenant_id, marks, end, began, rows, trims)
        log.debug("history.compacted tenant=%s from=%.0f to=%.0f written=%s", tenant_id, start, end, written)
        return written

    @staticmethod
    def _refold(name: str, kept: Mapping[str, list], fresh: list, start: float) -> list[tuple[str, float, str]]:
        """Return the rows rewriting the packs of `name` from start's: what is kept before it, then what is fresh."""
        size = size_of(name)
        cut = _floor(start, size)  # the first entry start touches is recomputed whole from finer data
        pack = PACK[size]
        earlier = [e for e in kept[name] if _floor(cut, pack) <= e.start < cut]
        return packed(name, earlier + [e for e in fresh if e.start >= cut])


def _floor(at: float, size_s: float) -> float:
    return math.floor(at / size_s) * size_s
