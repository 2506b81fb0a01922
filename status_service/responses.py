"""Marshmallow schemas of what the service answers: the source of the OpenAPI document (openapi.py).

They describe; nothing loads with them. Each object is open (no additionalProperties: false): later
versions add fields, and clients ignore those they do not know. The tests hold the answers to them
closed (tests/test_openapi.py), so a field the code adds and this file misses fails a test.
"""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from .reasons import CATEGORIES
from .schemas import CheckSchema, ProbeSchema
from .webhooks import EVENT_TYPES

STATUSES = ("ok", "degraded", "unhealthy")
HEALTHS = ("healthy", "unhealthy", "unknown", "maintenance")


def _say(text: str, **more: Any) -> dict[str, Any]:
    return {"description": text, **more}


def _time(text: str, nullable: bool = False, required: bool = True) -> fields.String:
    """An ISO 8601 UTC time, as the service writes them (2026-01-31T12:00:00Z)."""
    return fields.String(required=required, allow_none=nullable, metadata=_say(text, format="date-time"))


def _text(text: str, nullable: bool = False, required: bool = True, **more: Any) -> fields.String:
    return fields.String(required=required, allow_none=nullable, metadata=_say(text), **more)


def _count(text: str, nullable: bool = False) -> fields.Integer:
    return fields.Integer(required=True, allow_none=nullable, metadata=_say(text))


def _one_of(text: str, choices: tuple[str, ...], required: bool = True) -> fields.String:
    return fields.String(required=required, validate=validate.OneOf(choices), metadata=_say(text))


class ChecksSchema(Schema):
    class Meta:
        description = "What each of /readyz's checks found: ok, or what is wrong."

    redis = _text("ok, or how long Redis has been unreachable")
    registry = _text("ok, not seeded yet, or never reached")
    prober = _text("ok, no fresh prober heartbeat, or unknown. Alert on anything but ok")


class ErrorDetailSchema(Schema):
    class Meta:
        description = "What went wrong: a stable code to branch on, and a message for people."

    code = _text("Stable, snake_case: unauthorized, not_found, invalid_request, unavailable, ...")
    message = _text("What went wrong, for people; never a secret")


class ErrorSchema(Schema):
    class Meta:
        description = "Every error, in one envelope."

    status = _one_of("Always error", ("error",))
    error = fields.Nested(ErrorDetailSchema, required=True)
    fields_ = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), data_key="fields",
                          metadata=_say("Each bad field (body.x, query.x, path.x) with what is wrong with it"))
    checks = fields.Nested(ChecksSchema, metadata=_say("/readyz only"))


class IntegrationRowSchema(Schema):
    class Meta:
        description = "One integration as /status shows it."

    id = _text("The integration's id, unique in its tenant")
    status = _one_of("unknown until the first result, or when the result is stale; maintenance inside a window", HEALTHS)
    type = _text("The integration's type, as registered (MJ, DALL-E, ...)")
    checked_at = _time("When it was last probed", nullable=True)
    latency_ms = _count("How long the last probe took", nullable=True)
    reason = _text("Why the last probe failed, why it is unknown (not_checked_yet, stale), or maintenance; null when healthy",
                   nullable=True)
    reason_category = fields.String(required=True, allow_none=True, validate=validate.OneOf(CATEGORIES),
                                    metadata=_say("The reason's category; null with no failure (healthy, not checked yet, stale, maintenance)"))
    flapping = fields.Boolean(metadata=_say("Present, true, while it flaps: its alerts are held until it settles"))
    balance = fields.Float(metadata=_say("Present where the provider reports the account's credit: its last reading"))


class ProviderStatusSchema(Schema):
    class Meta:
        description = "Present while the type's provider has trouble: its status page reports an incident, or the fleet's failures suggest one."

    indicator = _text("The page's indicator: minor, major or critical; or, when only the fleet suspects an incident, "
                      "what the page says then (none, maintenance, unknown)")
    description = _text("What the page says")
    url = _text("The provider's status page")
    checked_at = _time("When the page was last read", nullable=True)
    suspected = fields.Boolean(metadata=_say("Present, true, while failures across tenants suggest a provider incident"))


class TypeStatsSchema(Schema):
    class Meta:
        description = "The counts of one integration type."

    total_count = _count("Integrations of this type outside maintenance")
    healthy_count = _count("Of which healthy")
    healthy_percentage = fields.Float(required=True, metadata=_say("100 * healthy / total, rounded half-up to 2 decimals; 100 when none"))
    status = _one_of("ok when all are healthy, unhealthy when none is, degraded otherwise", STATUSES)
    provider_status = fields.Nested(ProviderStatusSchema)


class StatusDataSchema(Schema):
    class Meta:
        description = "The tenant's integrations and their counts."

    integrations = fields.List(fields.Nested(IntegrationRowSchema), required=True)
    healthy_integrations_count = _count("Healthy integrations")
    total_integrations_count = _count("Integrations outside maintenance")
    healthy_percentage = fields.Float(required=True, metadata=_say("100 * healthy / total, rounded half-up to 2 decimals; 100 when none"))
    stats_by_integration_type = fields.Dict(keys=fields.String(), values=fields.Nested(TypeStatsSchema), required=True,
                                            metadata=_say("By type, in order of first appearance"))
    generated_at = _time("When this report was built")


class StatusDocumentSchema(Schema):
    class Meta:
        description = "The tenant's status: answered 200 whatever its integrations say."

    status = _one_of("ok when every integration is healthy, unhealthy when none is, degraded otherwise", STATUSES)
    data = fields.Nested(StatusDataSchema, required=True)


class HealthCheckSchema(Schema):
    class Meta:
        description = "One check of the health-check draft."

    componentId = _text("The integration type", required=False)
    componentType = _one_of("What is measured", ("integration-type", "integrations"))
    observedValue = fields.Float(required=True, metadata=_say("The healthy percentage, or the healthy count"))
    observedUnit = _one_of("percent or integrations", ("percent", "integrations"))
    status = _one_of("pass, warn or fail", ("pass", "warn", "fail"))
    time = _time("When the report was built")
    output = _text("n of m healthy")


class HealthDocumentSchema(Schema):
    class Meta:
        description = "The status in the IETF health-check draft's format: pass, warn and fail stand for ok, degraded and unhealthy."

    status = _one_of("pass, warn or fail", ("pass", "warn", "fail"))
    description = _text("What this document is about")
    checks = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(HealthCheckSchema)), required=True,
                         metadata=_say("<type>:healthyPercentage per type, and integrations:healthyCount"))


class PointSchema(Schema):
    class Meta:
        description = "One step of history: the time-weighted healthy percentage and its range."

    at = _time("The step's start")
    healthy_percentage = fields.Float(required=True, metadata=_say("Average over the step"))
    min = fields.Float(required=True, metadata=_say("Lowest in the step"))
    max = fields.Float(required=True, metadata=_say("Highest in the step"))
    status = _one_of("The worst status in the step", STATUSES)


class HistorySchema(Schema):
    class Meta:
        description = "The healthy percentage over a window; steps with no data are left out."

    window = _text("The window, like 24h")
    step = _text("The step, like 5m")
    type = _text("The integration type asked for, or null for all", nullable=True)
    complete_until = _time("Data after this is not folded in yet", nullable=True)
    points = fields.List(fields.Nested(PointSchema), required=True)


class ResultSchema(Schema):
    class Meta:
        description = "One probe's result."

    at = _time("When it was probed")
    ok = fields.Boolean(required=True, metadata=_say("Whether the probe passed"))
    status = _one_of("The integration's status after it", HEALTHS)
    latency_ms = _count("How long it took", nullable=True)
    reason = _text("Why it failed", nullable=True)


def _window(text: str) -> fields.Float:
    return fields.Float(required=True, allow_none=True, data_key=text, metadata=_say(f"Over the last {text}"))


class UptimeSchema(Schema):
    class Meta:
        description = "Healthy share in percent of the time with data, per window; null without data."

    h1, h24, d7, d30 = _window("1h"), _window("24h"), _window("7d"), _window("30d")


class CoverageSchema(Schema):
    class Meta:
        description = "Share of each window with data, from 0 to 1."

    h1, h24, d7, d30 = _window("1h"), _window("24h"), _window("7d"), _window("30d")


class LatencySchema(Schema):
    class Meta:
        description = "Latency percentiles over 24 h, null without data."

    p50 = _count("Median", nullable=True)
    p95 = _count("95th percentile", nullable=True)
    p99 = _count("99th percentile", nullable=True)


class IntegrationDetailSchema(Schema):
    class Meta:
        description = "One integration: its state, last checks, uptime and latency."

    id = _text("The integration's id")
    type = _text("Its type")
    status = _one_of("As /status shows it", HEALTHS)
    reason = _text("As /status shows it", nullable=True)
    checked_at = _time("When it was last probed", nullable=True)
    since = _time("Since when its status holds", nullable=True)
    consecutive_failures = _count("Failed probes in a row")
    last_checks = fields.List(fields.Nested(ResultSchema), required=True, metadata=_say("The last 20, newest first"))
    uptime = fields.Nested(UptimeSchema, required=True)
    coverage = fields.Nested(CoverageSchema, required=True)
    latency_ms = fields.Nested(LatencySchema, required=True)


class IntegrationRefSchema(Schema):
    class Meta:
        description = "The integration an event is about."

    id = _text("Its id")
    type = _text("Its type")


class EventSchema(Schema):
    class Meta:
        description = "One transition of an integration, a type, the tenant's status, or a maintenance window."

    id = _text("The event's id: pass the last one back as since")
    at = _time("When it happened, to the millisecond")
    scope = _one_of("What changed", ("integration", "type", "status", "maintenance", "provider"))
    integration = fields.Nested(IntegrationRefSchema, required=True, allow_none=True)
    previous = _text("The state before", nullable=True)
    current = _text("The state after")
    reason = _text("The integration's reason after the change", nullable=True)
    reason_category = fields.String(allow_none=True, validate=validate.OneOf(CATEGORIES),
                                    metadata=_say("scope integration: the reason's category then, as /status said it"))
    type = _text("scope type: which type", required=False)
    provider = _text("scope provider: which provider the fleet suspects (current suspected), or no longer (current ok)", required=False)
    maintenance = fields.Raw(metadata=_say("scope maintenance: the window's id; scope integration: true for a change inside a window",
                                           oneOf=[{"type": "string"}, {"const": True}]))
    flapping = fields.Boolean(metadata=_say("It began to flap"))
    held = fields.Boolean(metadata=_say("A change while it flaps: no alert"))
    settled = fields.Boolean(metadata=_say("It stopped flapping: previous is what alerts last said"))
    resumed = fields.Boolean(metadata=_say("Its maintenance window ended"))


class EventPageSchema(Schema):
    class Meta:
        description = "A page of events, oldest first."

    events = fields.List(fields.Nested(EventSchema), required=True)
    next = _text("Pass back as since for the next page", nullable=True)


class LivenessSchema(Schema):
    class Meta:
        description = "The process serves."

    status = _one_of("ok", ("ok",))


class ReadinessSchema(Schema):
    class Meta:
        description = "This node can answer /status; each check says what it found."

    status = _one_of("ok", ("ok",))
    checks = fields.Nested(ChecksSchema, required=True)


class TenantInfoSchema(Schema):
    class Meta:
        description = "A tenant: declared in the config file, or made through this API."

    id = _text("The tenant's id")
    source = _one_of("file or api", ("file", "api"))
    created_at = _time("When the API made it (api tenants only)", required=False)


class TenantPageSchema(Schema):
    class Meta:
        description = "A page of tenants, by id."

    tenants = fields.List(fields.Nested(TenantInfoSchema), required=True)
    next_cursor = _text("Pass back as cursor for the next page", nullable=True)


class MadeSchema(Schema):
    class Meta:
        description = "Something that exists: its id and when it was made."

    id = _text("Its id")
    created_at = _time("When it was made")


class NewKeySchema(MadeSchema):
    class Meta:
        description = "A new API key: shown in this answer only, as only its digest is kept."

    key = _text("The key itself")


class KeyListSchema(Schema):
    class Meta:
        description = "A tenant's keys made through the API; never a key."

    keys = fields.List(fields.Nested(MadeSchema), required=True)


class NewBadgeTokenSchema(MadeSchema):
    class Meta:
        description = "A new badge token: it reads the tenant's badge and nothing else; shown in this answer only."

    token = _text("The token itself (sbt_...)")


class BadgeTokenListSchema(Schema):
    class Meta:
        description = "A tenant's badge tokens; never a token."

    badge_tokens = fields.List(fields.Nested(MadeSchema), required=True)


class AuditEntrySchema(Schema):
    class Meta:
        description = "One change made through the admin API."

    id = _text("The entry's id: pass the last one back as cursor")
    admin = _text("The admin key's id (env for STATUS_ADMIN_KEY_SHA256's)")
    action = _text("What was done, like tenant.create or integration.replace")
    object = _text("What it was done to, like tenants/acme/integrations/1")
    at = _time("When")


class AuditPageSchema(Schema):
    class Meta:
        description = "A page of the audit log, oldest first."

    entries = fields.List(fields.Nested(AuditEntrySchema), required=True)
    next_cursor = _text("Pass back as cursor for the next page", nullable=True)


class ShownProbeSchema(ProbeSchema):
    class Meta:
        description = "A probe as the admin API shows it: header values, query values, user-info and fragment as ***."

    url = _text("The URL, its query values, user-info and fragment as ***")
    headers = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(("***",))),
                          metadata=_say("Header names; every value shows as ***"))


class ShownCheckSchema(CheckSchema):
    class Meta:
        description = "A provider check as the admin API shows it: every credential as ***."

    credentials = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(("***",))), required=True,
                              metadata=_say("The credentials' names; every value shows as ***"))


class RegisteredIntegrationSchema(Schema):
    class Meta:
        description = "An integration made through the API, with exactly one of probe and check; credentials show as ***."

    id = _text("Its id")
    type = _text("Its type")
    probe = fields.Nested(ShownProbeSchema, metadata=_say("A generic probe (or check)"))
    check = fields.Nested(ShownCheckSchema, metadata=_say("A built-in provider check (or probe)"))
    created_at = _time("When it was made")
    updated_at = _time("When it last changed")


class IntegrationPageSchema(Schema):
    class Meta:
        description = "A page of a tenant's integrations, by id."

    integrations = fields.List(fields.Nested(RegisteredIntegrationSchema), required=True)
    next_cursor = _text("Pass back as cursor for the next page", nullable=True)


class WebhookInfoSchema(Schema):
    class Meta:
        description = "A webhook; its secret is shown only when the service made it, in the answer that made it."

    id = _text("Its id (wh_...)")
    url = _text("Where events go")
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True, metadata=_say("Subscribed types; empty: all"))
    categories = fields.List(fields.String(validate=validate.OneOf(CATEGORIES)), required=True,
                             metadata=_say("Reason categories of the failures it gets; empty: all"))
    created_at = _time("When it was made")
    secret = _text("The signing secret the service made (whsec_...)", required=False)


class WebhookListSchema(Schema):
    class Meta:
        description = "A tenant's webhooks; never a secret."

    webhooks = fields.List(fields.Nested(WebhookInfoSchema), required=True)


class DeadLetterSchema(Schema):
    class Meta:
        description = "A delivery whose retry window ended."

    id = _text("The job's id: name it in replay's ids")
    webhook = _text("The webhook's id")
    event = _text("The event's id")
    attempts = _count("Attempts made")
    first_attempt_at = _time("The first attempt")
    dead_at = _time("When it gave up")
    reason = _text("Why the last attempt failed", nullable=True)


class DeadLetterListSchema(Schema):
    class Meta:
        description = "A tenant's dead letters, newest first."

    dead = fields.List(fields.Nested(DeadLetterSchema), required=True)


class ReplayedSchema(Schema):
    class Meta:
        description = "The dead letters queued again."

    replayed = fields.List(fields.String(), required=True, metadata=_say("Their ids: queued again, due now"))


class WindowSchema(Schema):
    class Meta:
        description = "A maintenance window."

    id = _text("Its id (mw_...)")
    starts_at = _time("When it opens")
    ends_at = _time("When it closes")
    integrations = fields.List(fields.String(), required=True, metadata=_say("Integrations it covers (none named, and no types: all)"))
    types = fields.List(fields.String(), required=True, metadata=_say("Types it covers"))
    note = _text("Why, for people")
    created_at = _time("When it was made")
    state = _one_of("Where it stands now", ("scheduled", "active", "ended"))


class WindowListSchema(Schema):
    class Meta:
        description = "A tenant's maintenance windows, by start."

    maintenance = fields.List(fields.Nested(WindowSchema), required=True)
