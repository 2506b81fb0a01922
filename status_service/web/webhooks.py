"""The admin API's webhooks: /admin/tenants/<tid>/webhooks, and their dead letters."""
from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify

from .. import policy, report
from ..schemas import NewWebhookSchema, ReplaySchema
from ..store.webhooks import Webhooks
from .admin import AdminError, _addresses, _body, _catalog, _cipher, _ids, _known_tenant, _now, _settings, _snapshot, guarded

bp = guarded(Blueprint("admin_webhooks", __name__, url_prefix="/admin"))

MAX_WEBHOOKS = 16  # per tenant
SECRET_PREFIX = "whsec_"


def _webhooks() -> Webhooks:
    return Webhooks(current_app.extensions["status_web"].store)


def _public(hook_id: str, definition: dict[str, Any]) -> dict[str, Any]:
    """Return a webhook as the API shows it: never its secret."""
    return {"id": hook_id, "url": _cipher().open(definition["url"]), "events": definition.get("events", []),
            "categories": definition.get("categories", []),
            "created_at": definition["created_at"]}


@bp.post("/tenants/<tenant_id>/webhooks")
def create_webhook(tenant_id: str) -> tuple[Response, int]:
    """Register a webhook; without a secret, one is made and shown in this answer only."""
    _ids(tenant_id=tenant_id)
    data = _body(NewWebhookSchema())
    if not _settings()["allow_private_addresses"]:
        host = urlsplit(data["url"]).hostname or ""
        refused = policy.addresses_refusal(_addresses(host.strip("[]")))
        if refused:
            raise AdminError(400, "invalid_request", "the webhook may not go there", {"url": [f"{host}: {refused}"]})
    _snapshot(tenant_id, "")  # 404 for no such tenant, 409 for the config file's (its webhooks are in the file)
    if not _catalog().settings().get("history", {}).get("enabled", True):
        raise AdminError(409, "history_off", "webhooks are sent from the events history keeps, and the config file turns history off")
    if len(_webhooks().definitions(tenant_id)) >= MAX_WEBHOOKS:
        raise AdminError(409, "limit_reached", f"tenant {tenant_id} has {MAX_WEBHOOKS} webhooks, the most allowed")
    made = "secret" not in data
    secret = data.get("secret") or SECRET_PREFIX + secrets.token_urlsafe(32)
    hook_id, at = "wh_" + secrets.token_hex(6), _now()
    # The URL is sealed too: a receiver's URL often holds a token of its own.
    definition = {"url": _cipher().seal(data["url"]), "events": list(dict.fromkeys(data["events"])),
                  "categories": list(dict.fromkeys(data["categories"])), "secret": _cipher().seal(secret),
                  "created_at": at}
    _webhooks().add(tenant_id, hook_id, definition)
    _catalog().note(tenant_id, g.admin, "webhook.create", f"tenants/{tenant_id}/webhooks/{hook_id}", at)
    shown = _public(hook_id, definition)
    if made:
        shown["secret"] = secret
    return jsonify(shown), 201


@bp.get("/tenants/<tenant_id>/webhooks")
def list_webhooks(tenant_id: str) -> Response:
    """List a tenant's webhooks; never a secret."""
    _ids(tenant_id=tenant_id)
    _snapshot(tenant_id, "")
    found = _webhooks().definitions(tenant_id)
    return jsonify(webhooks=[_public(i, d) for i, d in sorted(found.items())])


@bp.delete("/tenants/<tenant_id>/webhooks/<webhook_id>")
def delete_webhook(tenant_id: str, webhook_id: str) -> tuple[str, int]:
    """Remove a webhook: nothing more is sent to it, queued deliveries included."""
    _ids(tenant_id=tenant_id, webhook_id=webhook_id)
    _snapshot(tenant_id, "")
    if not _webhooks().remove(tenant_id, webhook_id):
        raise AdminError(404, "not_found", f"tenant {tenant_id} has no webhook {webhook_id}")
    _catalog().note(tenant_id, g.admin, "webhook.delete", f"tenants/{tenant_id}/webhooks/{webhook_id}", _now())
    return "", 204


@bp.get("/tenants/<tenant_id>/webhooks/dead")
def list_dead(tenant_id: str) -> Response:
    """List the deliveries whose retry window ended, newest first (the config file's tenants too)."""
    _known_tenant(tenant_id)
    found = _webhooks().dead(tenant_id)
    listed = [{"id": job, "webhook": entry["w"], "event": entry["e"], "attempts": entry["n"],
               "first_attempt_at": report.iso(entry["first"] / 1000), "dead_at": report.iso(entry.get("dead_at", 0) / 1000),
               "reason": entry.get("err")} for job, entry in found.items()]
    return jsonify(dead=sorted(listed, key=lambda d: d["dead_at"], reverse=True))


@bp.post("/tenants/<tenant_id>/webhooks/dead/replay")
def replay_dead(tenant_id: str) -> Response:
    """Queue dead letters again, due now with a fresh retry window: those named in `ids`, or all."""
    _known_tenant(tenant_id)
    data = _body(ReplaySchema(), optional=True)
    replayed = _webhooks().replay(tenant_id, data.get("ids", []), time.time())
    _catalog().note(tenant_id, g.admin, "webhook.replay", f"tenants/{tenant_id}/webhooks/dead", _now())
    return jsonify(replayed=replayed)
