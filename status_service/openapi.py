"""The OpenAPI 3.1 document: every route of the app, its auth, answers and errors, from the marshmallow schemas.

Routes are read from the app itself and described by the table below; a route the table misses
fails the build (and so the tests), so the document cannot fall behind the code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from . import responses as r
from .schemas import ID_PATTERN, IntegrationBodySchema, MaintenanceSchema, NewTenantSchema, NewWebhookSchema, ReplaySchema

VERSION = "1.0.0"
JSON = "application/json"
PUBLIC: list[dict[str, list[str]]] = []
TENANT = [{"apiKey": []}, {"basicKey": []}]
ADMIN = [{"adminKey": []}, {"basicKey": []}]

SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "A tenant's API key: `Authorization: Bearer <key>`. It sees only its own tenant."},
    "basicKey": {"type": "http", "scheme": "basic",
                 "description": "A tenant's API key, or on the admin API an admin key, through HTTP Basic as user name or "
                                "password (what a browser's login dialog sends)."},
    "adminKey": {"type": "http", "scheme": "bearer",
                 "description": "An admin key (config file `admin_keys`, or `STATUS_ADMIN_KEY_SHA256`). A tenant's key gets 403."},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "`STATUS_METRICS_TOKEN`, when it is set; /metrics is open otherwise."},
    "badgeToken": {"type": "apiKey", "in": "query", "name": "token",
                   "description": "A badge token (`sbt_...`): it reads the tenant's badge and nothing else."},
}


def _headers(**said: str) -> dict[str, Any]:
    """Return the headers of an answer, each always sent (names with _ for -)."""
    return {name.replace("_", "-"): {"description": says, "required": True, "schema": {"type": "string"}} for name, says in said.items()}


def _error(text: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": text, "content": {JSON: {"schema": "Error"}}}
    if headers:
        answer["headers"] = _headers(**headers)
    return answer


ERRORS = {
    400: _error("A bad path id, query parameter or body field: `fields` names each (path.x, query.x, or the body field's path, like probe.url)"),
    401: _error("Missing, malformed or unknown credential", WWW_Authenticate="Bearer and Basic challenges, realm status"),
    403: _error("A tenant's key on the admin API"),
    404: _error("No such thing, or not this key's to see"),
    409: _error("A conflict: the id is taken, the tenant is the config file's, or a limit is reached"),
    413: _error("The body is over 1 MiB"),
    415: _error("The body is not sent as application/json"),
    503: _error("Redis is unreachable, or no prober has seeded it yet; retry", Retry_After="Seconds to wait"),
}
METRICS_401 = _error("STATUS_METRICS_TOKEN is set and the request does not carry it as a Bearer token (only Bearer works here)",
                     WWW_Authenticate="Bearer and Basic challenges, realm status")
DEFAULT = _error("Any other error in the same envelope: 405 with Allow, 500 internal_error (a bug: nothing internal is said), "
                 "500 secret_key_mismatch (the admin API met a credential no key of this worker opens)")


def _query(name: str, text: str, **schema: Any) -> dict[str, Any]:
    return {"in": "query", "name": name, "description": text, "schema": {"type": "string", **schema}}


PAGING = (_query("cursor", "next_cursor of the previous page"),
          _query("limit", "How many, 1 to 1000", pattern="^[0-9]+$", default="100"))


@dataclass(frozen=True)
class Route:
    """How the document describes one route: who may call it, what it answers, and what it takes."""

    tag: str
    security: list[dict[str, list[str]]]
    answers: dict[int, dict[str, Any]]  # status -> {media type: schema (a class, or a JSON schema)}
    errors: tuple[int | tuple[int, dict[str, Any]], ...] = ()  # statuses of ERRORS, or (status, answer) of its own
    summary: str = ""  # for a view without a docstring
    query: tuple[dict[str, Any], ...] = ()
    body: Any = None
    body_optional: bool = False
    headers: tuple[dict[str, Any], ...] = ()


def _ok(schema: Any, media: str = JSON) -> dict[str, Any]:
    return {media: schema}


NONE: dict[str, Any] = {}  # an answer with no body (204, 304)
TEXT = {"type": "string"}
TENANT_ERRORS = (401, 503)
ADMIN_ERRORS = (400, 401, 403, 404, 503)  # a path id, the key, the tenant, Redis
ADMIN_LISTS = (400, 401, 403, 503)  # no tenant in the path
# What /status sends with its report (and its 304): polling is cheap with the tag.
TAGGED = {**_headers(Cache_Control="private, no-cache", Vary="Accept: JSON, health+json and the page are separate representations"),
          "ETag": {"description": "The report's tag (JSON and health+json): send it back as If-None-Match", "schema": TEXT}}

ROUTES: dict[str, Route] = {
    "health.livez": Route("service", PUBLIC, {200: _ok(r.LivenessSchema)}),
    "health.readyz": Route("service", PUBLIC, {200: _ok(r.ReadinessSchema)}, (503,)),
    "metrics.scrape": Route("service", [{}, {"metricsToken": []}], {200: _ok(TEXT, "text/plain")}, ((401, METRICS_401), 503)),
    "docs.document": Route("service", PUBLIC, {200: _ok({"type": "object"}), 304: NONE}),
    "docs.reference": Route("service", PUBLIC, {200: _ok(TEXT, "text/html"), 304: NONE}),
    "static": Route("service", PUBLIC, {200: {"text/css": TEXT, "text/javascript": TEXT}, 206: {"text/css": TEXT, "text/javascript": TEXT},
                                        304: NONE}, (404,), summary="Return the status page's own style sheet or script."),
    "status.status": Route(
        "status", [*TENANT, {"adminKey": []}],
        {200: {JSON: r.StatusDocumentSchema, "application/health+json": r.HealthDocumentSchema, "text/html": TEXT},
         304: NONE},
        (*TENANT_ERRORS, 404),
        query=(_query("page", "Browser page only: which 200 integrations (another value: the first)", pattern="^[1-9][0-9]{0,5}$"),
               _query("tenant", "Browser page, admin key: this tenant's page"),
               _query("after", "Browser page, admin key: tenants after this id")),
        headers=({"in": "header", "name": "If-None-Match", "schema": TEXT,
                  "description": "The ETag you hold: 304 while the report is unchanged"},),
    ),
    "status.badge_svg": Route("status", [*TENANT, {"badgeToken": []}], {200: _ok(TEXT, "image/svg+xml")}, TENANT_ERRORS),
    "history.history": Route(
        "status", TENANT, {200: _ok(r.HistorySchema)}, (400, *TENANT_ERRORS),
        query=(_query("window", "m, h or d from 1h to 400d", pattern="^[1-9][0-9]*[mhd]$", default="24h"),
               _query("step", "m, h or d from 1m to 1d; at most 2000 points", pattern="^[1-9][0-9]*[mhd]$"),
               _query("type", "One integration type only"))),
    "history.integration": Route("status", TENANT, {200: _ok(r.IntegrationDetailSchema)}, (404, *TENANT_ERRORS)),
    "history.events": Route(
        "status", TENANT, {200: _ok(r.EventPageSchema)}, (400, *TENANT_ERRORS),
        query=(_query("since", "The next of the previous page, or an ISO 8601 time with its zone"),
               _query("limit", "How many, 1 to 1000", pattern="^[0-9]+$", default="100"))),
    "admin.create_tenant": Route("tenants", ADMIN, {201: _ok(r.TenantInfoSchema)}, (*ADMIN_LISTS, 409, 413, 415),
                                 body=NewTenantSchema),
    "admin.list_tenants": Route("tenants", ADMIN, {200: _ok(r.TenantPageSchema)}, ADMIN_LISTS, query=PAGING),
    "admin.read_tenant": Route("tenants", ADMIN, {200: _ok(r.TenantInfoSchema)}, ADMIN_ERRORS),
    "admin.delete_tenant": Route("tenants", ADMIN, {204: NONE}, (*ADMIN_ERRORS, 409)),
    "admin.create_key": Route("keys", ADMIN, {201: _ok(r.NewKeySchema)}, (*ADMIN_ERRORS, 413, 415),
                              body={"type": "object", "maxProperties": 0}, body_optional=True),
    "admin.list_keys": Route("keys", ADMIN, {200: _ok(r.KeyListSchema)}, ADMIN_ERRORS),
    "admin.delete_key": Route("keys", ADMIN, {204: NONE}, ADMIN_ERRORS),
    "admin.create_badge_token": Route("keys", ADMIN, {201: _ok(r.NewBadgeTokenSchema)}, (*ADMIN_ERRORS, 413, 415),
                                      body={"type": "object", "maxProperties": 0}, body_optional=True),
    "admin.list_badge_tokens": Route("keys", ADMIN, {200: _ok(r.BadgeTokenListSchema)}, ADMIN_ERRORS),
    "admin.delete_badge_token": Route("keys", ADMIN, {204: NONE}, ADMIN_ERRORS),
    "admin.audit": Route("tenants", ADMIN, {200: _ok(r.AuditPageSchema)}, ADMIN_LISTS, query=PAGING),
    "admin.put_integration": Route("integrations", ADMIN, {200: _ok(r.RegisteredIntegrationSchema), 201: _ok(r.RegisteredIntegrationSchema)},
                                   (*ADMIN_ERRORS, 409, 413, 415), body=IntegrationBodySchema),
    "admin.list_integrations": Route("integrations", ADMIN, {200: _ok(r.IntegrationPageSchema)}, (*ADMIN_ERRORS, 409), query=PAGING),
    "admin.read_integration": Route("integrations", ADMIN, {200: _ok(r.RegisteredIntegrationSchema)}, (*ADMIN_ERRORS, 409)),
    "admin.delete_integration": Route("integrations", ADMIN, {204: NONE}, (*ADMIN_ERRORS, 409)),
    "admin_webhooks.create_webhook": Route("webhooks", ADMIN, {201: _ok(r.WebhookInfoSchema)}, (*ADMIN_ERRORS, 409, 413, 415),
                                           body=NewWebhookSchema),
    "admin_webhooks.list_webhooks": Route("webhooks", ADMIN, {200: _ok(r.WebhookListSchema)}, (*ADMIN_ERRORS, 409)),
    "admin_webhooks.delete_webhook": Route("webhooks", ADMIN, {204: NONE}, (*ADMIN_ERRORS, 409)),
    "admin_webhooks.list_dead": Route("webhooks", ADMIN, {200: _ok(r.DeadLetterListSchema)}, ADMIN_ERRORS),
    "admin_webhooks.replay_dead": Route("webhooks", ADMIN, {200: _ok(r.ReplayedSchema)}, (*ADMIN_ERRORS, 413, 415),
                                        body=ReplaySchema, body_optional=True),
    "admin_maintenance.create_window": Route("maintenance", ADMIN, {201: _ok(r.WindowSchema)}, (*ADMIN_ERRORS, 409, 413, 415),
                                             body=MaintenanceSchema),
    "admin_maintenance.list_windows": Route("maintenance", ADMIN, {200: _ok(r.WindowListSchema)}, ADMIN_ERRORS),
    "admin_maintenance.delete_window": Route("maintenance", ADMIN, {204: NONE}, ADMIN_ERRORS),
}

TAGS = [
    {"name": "status", "description": "A tenant's status, history and events, for its API key."},
    {"name": "service", "description": "The service itself: liveness, readiness, metrics, this document."},
    {"name": "tenants", "description": "Admin API: tenants and the audit log."},
    {"name": "keys", "description": "Admin API: a tenant's API keys and badge tokens, each shown once."},
    {"name": "integrations", "description": "Admin API: a tenant's integrations (tenants made through the API)."},
    {"name": "webhooks", "description": "Admin API: where a tenant's events are sent, and what could not be."},
    {"name": "maintenance", "description": "Admin API: windows in which integrations count for nothing."},
]

_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


class MissingRoute(Exception):
    """The app has a route the document's table does not describe."""


def build(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route of the app."""
    spec = APISpec(title="status-service", version=VERSION, openapi_version="3.1.0", plugins=[MarshmallowPlugin()],
                   info={"description": "Whether each customer's image-generation integrations work: "
                                        "GET /status with your API key. HEAD works wherever GET does, and OPTIONS "
                                        "answers with the methods a path takes (Allow)."},
                   tags=TAGS)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    spec.components.schema("Error", schema=r.ErrorSchema)
    by_path: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        route = ROUTES.get(rule.endpoint)
        if route is None:
            raise MissingRoute(f"{rule.endpoint} ({rule.rule}) is not described in openapi.ROUTES")
        view = app.view_functions[rule.endpoint]
        path = _PARAM.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            by_path.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, route, view.__doc__ or "", _PARAM.findall(rule.rule))
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return _portable(spec.to_dict())


def _portable(node: Any) -> Any:
    """Return the document with what apispec copies from Python as JSON Schema says it.

    A pattern's \\Z (end of text; Python's $ also matches before a final newline) is $ in JSON
    Schema's regular expressions, and a length limit on a mapping is maxProperties.
    """
    if isinstance(node, list):
        return [_portable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _portable(value) for key, value in node.items()}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = out["pattern"].replace("\\Z", "$")
    if out.get("type") == "object" and "maxLength" in out:
        out["maxProperties"] = out.pop("maxLength")
    return out


def _operation(endpoint: str, route: Route, doc: str, params: list[str]) -> dict[str, Any]:
    summary, _, rest = (doc.strip() or route.summary).partition("\n")
    operation: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"), "tags": [route.tag], "summary": summary.strip(),
        "security": route.security,
        "parameters": [_path_param(p) for p in params] + list(route.query) + list(route.headers),
        "responses": {str(code): _answer(code, content, endpoint) for code, content in route.answers.items()}
                     | dict(_error_answer(e) for e in route.errors) | {"default": DEFAULT},
    }
    if rest.strip():
        operation["description"] = " ".join(rest.split())
    if route.body is not None:
        operation["requestBody"] = {"required": not route.body_optional, "content": {JSON: {"schema": route.body}}}
    return operation


def _path_param(name: str) -> dict[str, Any]:
    schema = TEXT if name == "filename" else {"type": "string", "pattern": ID_PATTERN.pattern}  # filename: the page's assets
    return {"in": "path", "name": name, "required": True, "schema": schema}


def _answer(code: int, content: dict[str, Any], endpoint: str) -> dict[str, Any]:
    said = {200: "OK", 201: "Created", 204: "Done; no body", 206: "Part of it, for a Range request",
            304: "Not modified: the tag you sent (If-None-Match) is still current"}[code]
    answer: dict[str, Any] = {"description": said}
    if content:
        answer["content"] = {media: {"schema": schema} for media, schema in content.items()}
    if endpoint == "status.status":
        answer["headers"] = TAGGED
    return answer


def _error_answer(error: int | tuple[int, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    code, answer = error if isinstance(error, tuple) else (error, ERRORS[error])
    return str(code), answer


@dataclass(frozen=True)
class Field:
    """One field of a schema as the reference page lists it: its path, type, whether required, and what it is."""

    path: str
    kind: str
    required: bool
    description: str


def fields_of(schema: dict[str, Any], document: dict[str, Any], prefix: str = "", depth: int = 0) -> list[Field]:
    """Return a schema's fields, nested ones by their dotted path (a[] for items, a.<key> for a map's values)."""
    schema, _nullable = _resolved(schema, document)
    if depth > 8:  # no schema here nests this deep; a cycle would
        return []
    out: list[Field] = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        resolved, nullable = _resolved(prop, document)
        out.append(Field(path, _kind(resolved, nullable), name in required, prop.get("description") or resolved.get("description", "")))
        out.extend(_inside(resolved, document, path, depth))
    return out


def _inside(schema: dict[str, Any], document: dict[str, Any], path: str, depth: int) -> list[Field]:
    """Return the fields within a field: an object's, its items', or its map values'."""
    if "properties" in schema:
        return fields_of(schema, document, f"{path}.", depth + 1)
    items = schema.get("items")
    if isinstance(items, dict):
        return fields_of(items, document, f"{path}[].", depth + 1)
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and values:
        resolved, nullable = _resolved(values, document)
        return [Field(f"{path}.<key>", _kind(resolved, nullable), False, "")] + _inside(resolved, document, f"{path}.<key>", depth + 1)
    return []


def _resolved(schema: dict[str, Any], document: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Return a schema with its $ref followed, and whether null is allowed too."""
    nullable = False
    if "anyOf" in schema:
        nullable = {"type": "null"} in schema["anyOf"]
        schema = next(s for s in schema["anyOf"] if s != {"type": "null"})
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema, nullable


def _kind(schema: dict[str, Any], nullable: bool) -> str:
    """Return a schema's type as the reference says it: string (date-time), one of a | b, array of integer, or null."""
    kinds = schema.get("type", "any")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    if nullable:
        kinds.append("null")
    said = " or ".join(kinds)
    items = schema.get("items")
    if "array" in kinds and isinstance(items, dict):
        said = said.replace("array", "array of objects" if "$ref" in items or "properties" in items else f"array of {_kind(items, False)}")
    if "format" in schema:
        said += f" ({schema['format']})"
    if "enum" in schema:
        said += ": " + " | ".join("null" if v is None else str(v) for v in schema["enum"])
    return said
