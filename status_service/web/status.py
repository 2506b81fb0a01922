"""GET /status: authenticate, find the tenant's prebuilt report, return its bytes."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace

from flask import Blueprint, Response, current_app, request
from werkzeug.http import parse_etags

from .. import badge, report
from ..schemas import ID_PATTERN
from ..store import NotSeeded, Store, StoredReport, StoreUnavailable
from ..store.badges import Badges
from .auth import AuthError, well_formed, candidate_keys, digest
from . import page
from .admin import admin_of
from .errors import error_response
from .mirror import Link, Mirror, follow

bp = Blueprint("status", __name__)

BLIP_BUDGET_S = 10.0  # how long memory may stand in for an unreachable Redis


@dataclass
class Web:
    """What every request of one worker shares: the store, its memory of it, and the link's health."""

    store: Store
    mirror: Mirror
    link: Link = field(default_factory=Link)
    registry_seen: bool = False  # whether this worker has ever found a seeded registry in Redis
    _follower: threading.Thread | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _starting: threading.Lock = field(default_factory=threading.Lock)

    def ensure_following(self) -> None:
        """Start following the changes channel, once per worker process, on its first request."""
        if self._follower is not None or not self.mirror.max_bytes:
            return
        with self._starting:
            if self._follower is None:
                self._follower = threading.Thread(
                    target=follow, args=(self.store, self.mirror, self.link, self._stopped), name="changes", daemon=True
                )
                self._follower.start()

    def close(self) -> None:
        """Stop following the changes channel (the worker is going away)."""
        self._stopped.set()

    def find(self, digests: list[str], whole: bool = True) -> StoredReport:
        """Return the caller's report: from memory while it is current, else from Redis (all of it, or with `whole` False its head)."""
        self.ensure_following()
        if self.mirror.live:
            found = self.mirror.find(digests)
            if found is not None:
                return found
        outage_s = self.link.resting()
        if outage_s is not None:  # Redis failed a moment ago: answer from memory, or not at all
            found = self.mirror.find(digests) if outage_s <= BLIP_BUDGET_S else None
            if found is None:
                raise StoreUnavailable("redis unreachable")
            return found
        epoch = self.mirror.epoch
        try:
            matched = self.store.lookup(digests, self.mirror.tenant_of(digests), whole)
            self.link.up()
            self.registry_seen = True
        except NotSeeded:
            self.link.up()  # Redis answered; it has nothing to say yet
            raise
        except StoreUnavailable as exc:
            # A short outage is ridden out from memory; results still age by the clock below.
            if self.link.down(exc) <= BLIP_BUDGET_S:
                found = self.mirror.find(digests)
                if found is not None:
                    return found
            raise
        if matched is None:
            raise AuthError("unknown API key")
        matched_digest, found = matched
        if found.whole:
            self.mirror.remember(epoch, matched_digest, found)
        return found


def install(app_extensions: dict, store: Store, memory_bytes: int) -> None:
    """Give the app its store and its memory of it."""
    app_extensions["status_web"] = Web(store, Mirror(memory_bytes))


HEALTH_JSON = "application/health+json"  # the IETF health-check draft's format


@bp.get("/status")
def status() -> Response:
    """Return the caller's tenant report; 200 whatever its integrations say, 304 if the client holds it already.

    As JSON, or in the health-check draft's format for a client that prefers application/health+json.
    """
    digests = [digest(key) for key in candidate_keys(request.headers.get("Authorization"))]
    web: Web = current_app.extensions["status_web"]
    if page.wanted():  # a browser
        try:
            found = web.find(digests)
        except AuthError:
            if admin_of(digests) is None:
                raise
            tenant_id = request.args.get("tenant")  # an admin sees every tenant, and each one's page
            if tenant_id is None:
                return page.overview(request.args.get("after", ""))
            found = web.store.report(tenant_id) if ID_PATTERN.match(tenant_id) else None
            if found is None:
                return error_response(404, "not_found", "no tenant with this id, or no report for it yet")
        now = time.time()
        return page.render(found, report.current(found.body, found.stale, found.until, now), now)
    health = _wants_health()
    raw_held = request.headers.get("If-None-Match")
    # A client that names what it holds is answered from the report's tag: the body is read only if it changed.
    found = web.find(digests, whole=raw_held is None)
    now = time.time()
    if raw_held is not None and found.until >= now and _holds(raw_held, _tag(found.etag, health)):
        return _not_modified(_tag(found.etag, health))
    if not found.whole:
        found = web.find(digests)
    if found.until < now:
        # No prober rebuilt this report in time (or Redis is away): age its results by the clock.
        stale_at = {iid: float(at) for iid, at in json.loads(found.stale).items()}
        document = report.expire(json.loads(found.body), stale_at, now)
        # The aged document follows from the base one and which of its results have turned stale.
        tag = f"{found.etag.partition('.')[0]}.{sum(at < now for at in stale_at.values())}"  # from the base tag, even if aged already
        found = replace(found, body=report.encode(document), until=report.next_stale(stale_at, now), etag=tag)
        web.mirror.replace(found)
        if raw_held is not None and _holds(raw_held, _tag(found.etag, health)):
            return _not_modified(_tag(found.etag, health))
    if health:
        response = Response(report.encode(report.health(json.loads(found.body))), mimetype=HEALTH_JSON)
    else:
        response = Response(found.body, mimetype="application/json")
    response.headers["ETag"] = f'"{_tag(found.etag, health)}"'
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["Vary"] = "Accept"
    return response


@bp.get("/status/badge.svg")
def badge_svg() -> Response:
    """Return the badge of the caller's tenant: for a badge token (?token=, for README embeds) or a tenant's key."""
    web: Web = current_app.extensions["status_web"]
    token = request.args.get("token")
    if token is not None:
        tenant_id = Badges(web.store).tenant_of(digest(token)) if well_formed(token) else None
        if tenant_id is None:
            raise AuthError("unknown badge token")
        found = web.store.report(tenant_id)
        if found is None:
            raise NotSeeded("report not built yet")
    else:
        found = web.find([digest(key) for key in candidate_keys(request.headers.get("Authorization"))])
    document = report.current(found.body, found.stale, found.until, time.time())
    response = Response(badge.render(document["status"]), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-cache"  # an embed's proxy asks again each time
    return response


def _wants_health() -> bool:
    """Return whether the client prefers the health-check format to JSON (no Accept, or */*: JSON)."""
    accept = request.headers.get("Accept")
    if not accept or HEALTH_JSON not in accept.lower():  # the common case costs a substring test
        return False
    return request.accept_mimetypes.best_match(["application/json", HEALTH_JSON]) == HEALTH_JSON


def _tag(etag: str, health: bool) -> str:
    """Return the tag of a representation: one per format, as a strong tag must be."""
    return f"{etag}-health" if health else etag


CACHE_CONTROL = "private, no-cache"  # any cache must ask again each time, and may keep it for one user only


def _holds(raw: str, etag: str) -> bool:
    """Return whether an If-None-Match header names this tag (weak comparison, as RFC 9110 wants for it)."""
    if not etag:
        return False
    # Pollers echo the tag they got: that case costs a string comparison, the rest a parse.
    return raw == f'"{etag}"' or parse_etags(raw).contains_weak(etag)


def _not_modified(etag: str) -> Response:
    """Return a 304 for a client that holds the current report."""
    return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": CACHE_CONTROL, "Vary": "Accept"})
