"""The admin API under /admin: tenants and their keys, and the audit log, for admin keys only."""
from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError

from .. import policy, report
from ..cipher import Cipher, CipherError
from ..model import DEFAULT_MAX_INTEGRATIONS, Integration, schedule_member
from ..registry import spec_of
from ..schemas import ID_PATTERN, IntegrationBodySchema, NewTenantSchema
from ..store.admin import Admin
from ..store.badges import Badges
from ..store.catalog import Catalog, Snapshot
from ..store.webhooks import Webhooks
from .auth import BADGE_PREFIX, AuthError, candidate_keys, digest, new_key
from .errors import error_response

bp = Blueprint("admin", __name__, url_prefix="/admin")

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
RESOLVE_TIMEOUT_S = 2.0  # a name that does not resolve by then is checked when it is probed
MASK = "***"
# A few threads for registration-time lookups: a hanging resolver holds one of them, never a request.
_resolver = ThreadPoolExecutor(4, thread_name_prefix="admin-resolve")


class AdminError(Exception):
    """A request the admin API refuses: HTTP status, error code, message, and the bad fields."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


def install(app_extensions: dict[str, Any], admin_key_sha256: str | None, cipher: Cipher) -> None:
    """Give the app the admin key of the environment, if one is set, and the cipher of credentials."""
    app_extensions["status_admin_env_key"] = admin_key_sha256
    app_extensions["status_cipher"] = cipher


def _admin() -> Admin:
    return Admin(current_app.extensions["status_web"].store)


def _catalog() -> Catalog:
    return Catalog(current_app.extensions["status_web"].store)


def _cipher() -> Cipher:
    return current_app.extensions["status_cipher"]


@bp.errorhandler(AdminError)
def refused(exc: AdminError) -> Response:
    """Answer in the error envelope, naming each bad field."""
    extra = {"fields": exc.fields} if exc.fields else {}
    return error_response(exc.status, exc.code, exc.message, **extra)


@bp.errorhandler(CipherError)
def undecryptable(exc: CipherError) -> Response:
    """A stored credential that no key opens: the operator must give this worker every key in use."""
    return error_response(500, "secret_key_mismatch", str(exc))


@bp.before_request
def authenticate() -> None:
    """Let admin keys in; a tenant's key gets 403, anything else 401."""
    digests = [digest(key) for key in candidate_keys(request.headers.get("Authorization"))]
    admin = admin_of(digests)
    if admin is not None:
        g.admin = admin
        return
    if _admin().owns_tenant_key(digests):
        raise AdminError(403, "forbidden", "a tenant's API key cannot use the admin API")
    raise AuthError("unknown admin key")


def admin_of(digests: list[str]) -> str | None:
    """Return the id of the admin key among these key digests ("env" for STATUS_ADMIN_KEY_SHA256's), or None."""
    env_key = current_app.extensions.get("status_admin_env_key")
    if env_key and any(hmac.compare_digest(d, env_key) for d in digests):
        return "env"
    return _admin().admin_of(digests)  # looked up by digest: no secret is compared


def guarded(blueprint: Blueprint) -> Blueprint:
    """Give another blueprint of admin routes this one's authentication and error answers."""
    blueprint.before_request(authenticate)
    blueprint.register_error_handler(AdminError, refused)
    blueprint.register_error_handler(CipherError, undecryptable)
    return blueprint


def _known_tenant(tenant_id: str) -> None:
    """Refuse a bad tenant id (400), or one that names no tenant, of the file or the API (404)."""
    _ids(tenant_id=tenant_id)
    if _admin().tenant(tenant_id) is None:
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ids(**path: str) -> None:
    """Refuse path ids that break the config file's id rule, naming each."""
    bad = {f"path.{name}": ["must be 1-64 characters of letters, digits and _ . : - (starting with a letter or digit)"]
           for name, value in path.items() if not ID_PATTERN.match(value)}
    if bad:
        raise AdminError(400, "invalid_request", "invalid path", bad)


def _body(schema: Schema, optional: bool = False) -> dict[str, Any]:
    """Return the request's JSON body loaded by `schema`; 415, 413 or 400 naming every bad field."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise AdminError(413, "request_entity_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    # Read past the limit by one byte: a chunked body has no length up front.
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if optional and not raw:
        return {}
    if request.mimetype != "application/json":
        raise AdminError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
    if len(raw) > MAX_BODY_BYTES:
        raise AdminError(413, "request_entity_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AdminError(400, "invalid_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise AdminError(400, "invalid_request", "the body must be a JSON object")
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise AdminError(400, "invalid_request", "invalid body", _flatten(exc.messages)) from None


def _flatten(messages: Any, where: str = "") -> dict[str, list[str]]:
    if isinstance(messages, dict):
        out: dict[str, list[str]] = {}
        for key, value in messages.items():
            out.update(_flatten(value, f"{where}.{key}" if where else str(key)))
        return out
    return {where or "body": [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]}


def _page() -> tuple[str, int]:
    """Return the cursor and limit of a paged listing; 400 naming a bad one."""
    cursor = request.args.get("cursor", "")
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise AdminError(400, "invalid_request", "invalid query", {"query.limit": [f"must be a whole number from 1 to {MAX_LIMIT}"]})
    if len(cursor) > 256:
        raise AdminError(400, "invalid_request", "invalid query", {"query.cursor": ["too long"]})
    return cursor, int(raw)


def _tenant_json(info: Any) -> dict[str, Any]:
    return {"id": info.id, "source": info.source, **({"created_at": info.created_at} if info.created_at else {})}


@bp.post("/tenants")
def create_tenant() -> tuple[Response, int]:
    """Make a tenant with no integrations: 201, or 409 if the id is taken."""
    tenant_id = _body(NewTenantSchema())["id"]
    at = _now()
    if not _admin().create_tenant(tenant_id, g.admin, at, _empty_report()):
        raise AdminError(409, "conflict", f"tenant {tenant_id} already exists")
    return jsonify(id=tenant_id, source="api", created_at=at), 201


@bp.get("/tenants")
def list_tenants() -> Response:
    """List tenants by id, a page at a time."""
    cursor, limit = _page()
    page, after = _admin().tenants(cursor, limit)
    return jsonify(tenants=[_tenant_json(t) for t in page], next_cursor=after)


@bp.get("/tenants/<tenant_id>")
def read_tenant(tenant_id: str) -> Response:
    """Read one tenant."""
    _ids(tenant_id=tenant_id)
    info = _admin().tenant(tenant_id)
    if info is None:
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    return jsonify(_tenant_json(info))


@bp.delete("/tenants/<tenant_id>")
def delete_tenant(tenant_id: str) -> tuple[str, int]:
    """Delete a tenant made through the API, with its keys and all its data."""
    _ids(tenant_id=tenant_id)
    # Their places in the schedule, read first: a new tenant of the id may put the same ids there after.
    due = _catalog().due({schedule_member(tenant_id, i) for i in _catalog().ids(tenant_id)})
    done = _admin().delete_tenant(tenant_id, g.admin, _now())
    if done == 0:
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    if done == -1:
        raise AdminError(409, "conflict", f"tenant {tenant_id} is declared in the config file; remove it there")
    for member in (schedule_member(tenant_id, i) for i in done):
        if due.get(member) is not None:  # else a prober that claims it takes it out: nothing defines it
            _catalog().unschedule_if(member, due[member])
    _catalog().announce(tenant_id)
    # Its webhooks, maintenance windows and badge tokens went with its data; dispatchers stop looking.
    Webhooks(current_app.extensions["status_web"].store).forget(tenant_id)
    return "", 204


class _NoFields(Schema):
    """A body with nothing in it (an empty object, or no body at all)."""


@bp.post("/tenants/<tenant_id>/keys")
def create_key(tenant_id: str) -> tuple[Response, int]:
    """Issue a key: the plain key is in this answer only; only its digest is kept."""
    _ids(tenant_id=tenant_id)
    _body(_NoFields(), optional=True)
    key, at = new_key(), _now()
    key_id = _admin().issue_key(tenant_id, digest(key), g.admin, at)
    if key_id is None:
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    return jsonify(id=key_id, key=key, created_at=at), 201


@bp.post("/tenants/<tenant_id>/badge-tokens")
def create_badge_token(tenant_id: str) -> tuple[Response, int]:
    """Issue a badge token: it reads the tenant's /status/badge.svg and nothing else; shown in this answer only."""
    _known_tenant(tenant_id)
    _body(_NoFields(), optional=True)
    token, at = new_key(BADGE_PREFIX), _now()
    token_id = Badges(current_app.extensions["status_web"].store).issue(digest(token), tenant_id, at)
    _catalog().note(tenant_id, g.admin, "badge.create", f"tenants/{tenant_id}/badge-tokens/{token_id}", at)
    return jsonify(id=token_id, token=token, created_at=at), 201


@bp.get("/tenants/<tenant_id>/badge-tokens")
def list_badge_tokens(tenant_id: str) -> Response:
    """List a tenant's badge tokens by id; never a token."""
    _known_tenant(tenant_id)
    return jsonify(badge_tokens=Badges(current_app.extensions["status_web"].store).listed(tenant_id))


@bp.delete("/tenants/<tenant_id>/badge-tokens/<token_id>")
def delete_badge_token(tenant_id: str, token_id: str) -> tuple[str, int]:
    """Revoke a badge token."""
    _ids(tenant_id=tenant_id, token_id=token_id)
    if not Badges(current_app.extensions["status_web"].store).revoke(tenant_id, token_id):
        raise AdminError(404, "not_found", f"tenant {tenant_id} has no badge token {token_id}")
    _catalog().note(tenant_id, g.admin, "badge.delete", f"tenants/{tenant_id}/badge-tokens/{token_id}", _now())
    return "", 204


@bp.get("/tenants/<tenant_id>/keys")
def list_keys(tenant_id: str) -> Response:
    """List the ids and creation times of a tenant's keys made through the API; never a key."""
    _ids(tenant_id=tenant_id)
    if _admin().tenant(tenant_id) is None:
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    return jsonify(keys=_admin().keys(tenant_id))


@bp.delete("/tenants/<tenant_id>/keys/<key_id>")
def delete_key(tenant_id: str, key_id: str) -> tuple[str, int]:
    """Revoke a key: every web worker refuses it within a second."""
    _ids(tenant_id=tenant_id, key_id=key_id)
    if not _admin().delete_key(tenant_id, key_id, g.admin, _now()):
        raise AdminError(404, "not_found", f"tenant {tenant_id} has no key {key_id}")
    return "", 204


def _entry_id(text: str) -> bool:
    """Return whether text is a stream entry id this API hands out: two numbers below 2**63, joined by "-"."""
    parts = text.split("-")
    return len(parts) == 2 and all(p.isascii() and p.isdigit() and int(p) < 2**63 for p in parts)


@bp.get("/audit")
def audit() -> Response:
    """List every change, oldest first: which admin key, the action, the object and the time."""
    cursor, limit = _page()
    if cursor and not _entry_id(cursor):
        raise AdminError(400, "invalid_request", "invalid query", {"query.cursor": ["not an audit entry id"]})
    entries, after = _admin().audit(cursor, limit)
    return jsonify(entries=entries, next_cursor=after)


# -- integrations -------------------------------------------------------------------------------
def _masked(probe: dict[str, Any]) -> dict[str, Any]:
    """Return a probe as an admin may see it: header values, query values, user-info and fragment as "***"."""
    shown = dict(probe)
    if "headers" in shown:
        shown["headers"] = {name: MASK for name in shown["headers"]}
    parts = urlsplit(probe["url"])
    # A bare query item (?KEY) or a user name (https://KEY@host) may be the credential itself.
    query = "&".join(f"{name}={MASK}" if sep else MASK for name, sep, _ in (p.partition("=") for p in parts.query.split("&") if p))
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    shown["url"] = urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))
    return shown


def _integration_json(integration_id: str, definition: dict[str, Any], how: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    way, given = how
    shown = _masked(given) if way == "probe" else {**given, "credentials": {name: MASK for name in given["credentials"]}}
    return {"id": integration_id, "type": definition["type"], way: shown,
            "created_at": definition["created_at"], "updated_at": definition["updated_at"]}


def _way(data: dict[str, Any]) -> str:
    """Return how an integration is checked: "check" (a built-in provider check) or "probe" (a generic one)."""
    return "check" if "check" in data else "probe"


def _opened(definition: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return how a stored integration is checked, and its check or probe, decrypted."""
    way = _way(definition)
    return way, json.loads(_cipher().open(definition[way]))


def _settings() -> dict[str, Any]:
    """Return the admin API's settings from the config file last seeded, with their defaults."""
    found = _catalog().settings()
    return {"allow_private_addresses": bool(found.get("allow_private_addresses", False)),
            "max_integrations_per_tenant": int(found.get("max_integrations_per_tenant", DEFAULT_MAX_INTEGRATIONS))}


def _addresses(host: str) -> list[str]:
    """Return the addresses a name resolves to now, or none if it does not resolve in time."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    future = _resolver.submit(socket.getaddrinfo, host, None, proto=socket.IPPROTO_TCP)
    try:
        return [info[4][0] for info in future.result(timeout=RESOLVE_TIMEOUT_S)]
    except (OSError, FutureTimeout, UnicodeError):
        return []  # checked again at every connect: a name that resolves later is refused then


def _refusals(probe: dict[str, Any]) -> dict[str, list[str]]:
    """Return why an untrusted probe may not be registered, by field: the address policy of policy.py."""
    bad: dict[str, list[str]] = {}
    method = probe.get("method", "GET")
    if method not in policy.METHODS:
        bad["probe.method"] = [f"must be {' or '.join(policy.METHODS)}"]
    refused = policy.request_refusal("GET", probe["url"], probe.get("headers", {}))
    if refused:
        bad["probe.url"] = [refused]
    host = urlsplit(probe["url"]).hostname or ""
    refused = policy.addresses_refusal(_addresses(host.strip("[]")))
    if refused:
        bad.setdefault("probe.url", []).append(f"{host}: {refused}")
    return bad


def _empty_report() -> bytes:
    return report.encode(report.build_report((), {}, time.time()))


def _snapshot(tenant_id: str, integration_id: str) -> Snapshot:
    """Read an integration's tenant as an edit starts from it; refuse a missing tenant (404) or the file's (409).

    A tenant whose creation a crash cut short is finished first.
    """
    seen = _catalog().snapshot(tenant_id, integration_id)
    if seen.seeded is None and _admin().finish(tenant_id, _empty_report()):
        seen = _catalog().snapshot(tenant_id, integration_id)
    if seen.seeded is None or seen.seeded.startswith("gone:"):
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    if not seen.seeded.startswith("api:"):
        raise AdminError(409, "conflict", f"tenant {tenant_id} is declared in the config file; change its integrations there")
    return seen


@bp.put("/tenants/<tenant_id>/integrations/<integration_id>")
def put_integration(tenant_id: str, integration_id: str) -> tuple[Response, int]:
    """Create (201) or replace (200) an integration; the same body again changes nothing."""
    _ids(tenant_id=tenant_id, integration_id=integration_id)
    data = _body(IntegrationBodySchema())
    if data.get("id", integration_id) != integration_id:
        raise AdminError(400, "invalid_request", "invalid body", {"id": [f"must equal the path's integration id {integration_id!r}"]})
    settings = _settings()
    way = _way(data)
    if way == "probe" and not settings["allow_private_addresses"]:  # a check goes only where the file says
        bad = _refusals(data["probe"])
        if bad:
            raise AdminError(400, "invalid_request", "the probe may not go there", bad)
    seen = _snapshot(tenant_id, integration_id)
    if seen.definition is not None and (seen.definition["type"], _opened(seen.definition)) == (data["type"], (way, data[way])):
        return jsonify(_integration_json(integration_id, seen.definition, (way, data[way]))), 200
    at, now = _now(), time.time()
    row = report.row(Integration(tenant_id, integration_id, data["type"], spec_of(data, ())), None, now)
    definition = {"type": data["type"], way: _cipher().seal(json.dumps(data[way])), "created_at": at, "updated_at": at}
    done = _catalog().change(tenant_id, integration_id, definition, report.encode(row), report.iso(now),
                             settings["max_integrations_per_tenant"])
    if done == "missing":
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    if done == "full":
        raise AdminError(409, "limit_reached",
                         f"tenant {tenant_id} has {settings['max_integrations_per_tenant']} integrations, the most allowed")
    created, _rev = done
    _catalog().make_due(schedule_member(tenant_id, integration_id))
    _catalog().note(tenant_id, g.admin, "integration.create" if created else "integration.replace",
                    f"tenants/{tenant_id}/integrations/{integration_id}", at)
    if not created and seen.definition is not None:
        definition["created_at"] = seen.definition["created_at"]
    return jsonify(_integration_json(integration_id, definition, (way, data[way]))), 201 if created else 200


@bp.get("/tenants/<tenant_id>/integrations")
def list_integrations(tenant_id: str) -> Response:
    """List a tenant's integrations by id, a page at a time; credentials show as "***"."""
    _ids(tenant_id=tenant_id)
    cursor, limit = _page()
    _snapshot(tenant_id, "")  # the tenant's checks; no integration has the empty id
    ids = [i for i in _catalog().ids(tenant_id) if i > cursor]
    page = ids[:limit]
    found = _catalog().definitions(tenant_id, page)
    listed = [_integration_json(i, d, _opened(d)) for i, d in found.items()]
    return jsonify(integrations=listed, next_cursor=page[-1] if len(ids) > limit else None)


@bp.get("/tenants/<tenant_id>/integrations/<integration_id>")
def read_integration(tenant_id: str, integration_id: str) -> Response:
    """Read one integration; credentials show as "***"."""
    _ids(tenant_id=tenant_id, integration_id=integration_id)
    seen = _snapshot(tenant_id, integration_id)
    if seen.definition is None:
        raise AdminError(404, "not_found", f"tenant {tenant_id} has no integration {integration_id}")
    return jsonify(_integration_json(integration_id, seen.definition, _opened(seen.definition)))


@bp.delete("/tenants/<tenant_id>/integrations/<integration_id>")
def delete_integration(tenant_id: str, integration_id: str) -> tuple[str, int]:
    """Remove an integration: it leaves /status at once, and no prober can write it back."""
    _ids(tenant_id=tenant_id, integration_id=integration_id)
    seen = _snapshot(tenant_id, integration_id)
    done = _catalog().change(tenant_id, integration_id, None, b"", report.iso(time.time()))
    if done == "missing":
        raise AdminError(404, "not_found", f"no tenant {tenant_id}")
    if done == "absent":
        raise AdminError(404, "not_found", f"tenant {tenant_id} has no integration {integration_id}")
    if seen.due is not None:
        # Unless a racing put made it due again, or a prober claimed it: that prober then drops it.
        _catalog().unschedule_if(schedule_member(tenant_id, integration_id), seen.due)
    _catalog().note(tenant_id, g.admin, "integration.delete", f"tenants/{tenant_id}/integrations/{integration_id}", _now())
    return "", 204
