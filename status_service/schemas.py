"""Marshmallow schemas for the config file; they validate once, at the edge."""
from __future__ import annotations

import math
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .model import DEFAULT_INTERVAL_S, DEFAULT_TIMEOUT_S
from .providers import PROVIDERS
from .reasons import CATEGORIES
from .webhooks import EVENT_TYPES

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Ids appear in URLs, logs and Redis key names: keep them plain.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")  # \Z: no trailing newline
SHA256_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
# No CR, LF or other control characters, and no leading white space (requests refuses to send it).
HEADER_VALUE = re.compile(r"^(?![\t ])[\t\x20-\x7e\x80-\xff]*\Z")


class Number(fields.Float):
    """A number that refuses booleans and strings, which YAML would otherwise let through."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("not a number")
        return super()._deserialize(value, attr, data, **kwargs)


class Count(fields.Integer):
    """A whole number that refuses booleans, floats and strings."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("not a whole number")
        return super()._deserialize(value, attr, data, **kwargs)


class Flag(fields.Boolean):
    """true or false, and nothing YAML or JSON would otherwise let through ("yes", 1)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class Id(fields.String):
    """An id: a plain string, or a YAML integer taken as its decimal string."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).setdefault("pattern", ID_PATTERN.pattern)  # for the OpenAPI document
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise ValidationError("must be 1-64 characters of letters, digits and _ . : - (starting with a letter or digit)")
        return value


def _encodable(value: str) -> str:
    """Return value if it can be written as UTF-8 (a lone surrogate, which JSON can carry, cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("not valid Unicode text") from None
    return value


class Text(fields.String):
    """A string that can be written as UTF-8."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _encodable(super()._deserialize(value, attr, data, **kwargs))


class Scalar(fields.Raw):
    """A JSON scalar: string, finite number, boolean or null."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValidationError("must be a string, number, boolean or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("must be a finite number")
        return _encodable(value) if isinstance(value, str) else value


class ProbeDefaultsSchema(Schema):
    """Probe settings that apply to every integration unless it overrides them."""

    interval_seconds = Number(validate=validate.Range(min=1, max=86400))
    timeout_seconds = Number(validate=validate.Range(min=0.05, max=300))
    failure_threshold = Count(validate=validate.Range(min=1, max=100))
    success_threshold = Count(validate=validate.Range(min=1, max=100))
    stale_after_seconds = Number(validate=validate.Range(min=1, max=30 * 86400))
    max_body_bytes = Count(validate=validate.Range(min=1, max=64 * 1024 * 1024))


class FileProbeDefaultsSchema(ProbeDefaultsSchema):
    """The config file's probe defaults, and the address policy that only the file may lift."""

    # Lets integrations made through the admin API reach private addresses and send credentials
    # over plain http: for development and tests. Never settable through the API or per integration.
    allow_private_addresses = Flag()


class ProbeSchema(ProbeDefaultsSchema):
    """How to probe one integration."""

    # Bounded, as what the admin API stores is: a registry of 10,000 integrations stays small.
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    method = fields.String(validate=validate.OneOf(HTTP_METHODS))
    headers = fields.Dict(
        keys=fields.String(validate=validate.Regexp(HEADER_NAME, error="not a valid HTTP header name")),
        values=fields.String(validate=[validate.Regexp(HEADER_VALUE, error="not a valid HTTP header value"),
                                       validate.Length(max=8192)]),
        validate=validate.Length(max=64),
    )
    expect_status = fields.List(Count(validate=validate.Range(min=100, max=599)), validate=[validate.Length(min=1), validate.Length(max=100)])
    expect_json = fields.Dict(keys=Text(validate=[validate.Length(min=1), validate.Length(max=256)]), values=Scalar(),
                              validate=validate.Length(max=64))


class CheckSchema(ProbeDefaultsSchema):
    """A built-in provider check: the provider, the account's credentials, and the probe timings."""

    provider = fields.String(required=True, validate=validate.OneOf(sorted(PROVIDERS)))
    # Credentials go into request headers: the header value rule keeps CR and LF out.
    credentials = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)),
                              values=fields.String(validate=[validate.Length(min=1, max=4096),
                                                             validate.Regexp(HEADER_VALUE, error="not a valid HTTP header value")]),
                              required=True, validate=validate.Length(max=8))
    low_balance = Number(validate=validate.Range(min=0, max=1e12))

    @validates_schema
    def known_credentials(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse credentials the provider does not take, or lacking one it needs, naming each."""
        provider = PROVIDERS.get(data.get("provider", ""))
        if provider is None or "credentials" not in data:
            return
        given = data["credentials"]
        errors = {name: ["required"] for name in provider.required if name not in given}
        for name, value in given.items():
            if name not in provider.credentials:
                errors[name] = [f"{provider.name} takes {', '.join(sorted(provider.credentials))}"]
            elif provider.credentials[name] and value not in provider.credentials[name]:
                errors[name] = [f"must be one of: {', '.join(provider.credentials[name])}"]
        if errors:
            raise ValidationError({"credentials": errors})


def _one_way(data: dict[str, Any]) -> None:
    """Refuse an integration that gives both a check and a probe, or neither."""
    if ("check" in data) == ("probe" in data):
        raise ValidationError("give either check (a built-in provider check) or probe (a generic HTTP check), not both",
                              "check" if "check" in data else "probe")


class IntegrationSchema(Schema):
    """One integration of a tenant: a built-in provider check, or a generic HTTP probe."""

    id = Id(required=True)
    type = Text(required=True, validate=validate.Length(min=1, max=64))
    check = fields.Nested(CheckSchema)
    probe = fields.Nested(ProbeSchema)

    @validates_schema
    def one_way(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse both a check and a probe, or neither."""
        _one_way(data)


class ApiKeySchema(Schema):
    """One API key, stored only as the SHA-256 digest of the key."""

    sha256 = fields.String(required=True, validate=validate.Regexp(SHA256_PATTERN, error="not a SHA-256 hex digest"))


class NewWebhookSchema(Schema):
    """The body of POST /admin/tenants/<tid>/webhooks: a secret is made when none is given."""

    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    secret = Text(validate=validate.Length(min=16, max=256))
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), load_default=list, validate=validate.Length(max=len(EVENT_TYPES)))
    categories = fields.List(fields.String(validate=validate.OneOf(CATEGORIES)), load_default=list,
                             validate=validate.Length(max=len(CATEGORIES)))  # of failures' reasons; empty: all


class WebhookSchema(NewWebhookSchema):
    """Where a tenant's events go, in the config file: its secret is given, its id defaults to its URL's."""

    id = Id()
    secret = Text(required=True, validate=validate.Length(min=16, max=256))


class TenantSchema(Schema):
    """One customer."""

    id = Id(required=True)
    api_keys = fields.List(fields.Nested(ApiKeySchema), load_default=list)
    integrations = fields.List(fields.Nested(IntegrationSchema), load_default=list)
    webhooks = fields.List(fields.Nested(WebhookSchema), load_default=list, validate=validate.Length(max=16))

    @validates_schema
    def unique_integration_ids(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse two integrations with one id in a tenant."""
        errors = _duplicates([i["id"] for i in data.get("integrations", [])], "duplicate integration id")
        if errors:
            raise ValidationError({"integrations": {index: {"id": [msg]} for index, msg in errors.items()}})
        hooks = _duplicates([h.get("id") or h["url"] for h in data.get("webhooks", [])], "duplicate webhook (id, or URL without one)")
        if hooks:
            raise ValidationError({"webhooks": {index: {"id": [msg]} for index, msg in hooks.items()}})


class AdminKeySchema(Schema):
    """A key of the admin API, named for the audit log, stored only as its SHA-256 digest."""

    id = Id(required=True)
    sha256 = fields.String(required=True, validate=validate.Regexp(SHA256_PATTERN, error="not a SHA-256 hex digest"))


class ProberSchema(Schema):
    """How each prober process runs."""

    concurrency = Count(validate=validate.Range(min=1, max=1024))
    tick_seconds = Number(validate=validate.Range(min=0.05, max=60))


class AdminSettingsSchema(Schema):
    """Limits of the admin API."""

    # So the API cannot turn the prober fleet into a traffic amplifier.
    max_integrations_per_tenant = Count(validate=validate.Range(min=0, max=1_000_000))  # default 10,000


class HistorySchema(Schema):
    """What history keeps, and for how long."""

    enabled = Flag()
    raw_hours = Number(validate=validate.Range(min=1, max=24 * 14))
    five_minute_days = Number(validate=validate.Range(min=1, max=400))
    hourly_days = Number(validate=validate.Range(min=1, max=3650))
    events_days = Number(validate=validate.Range(min=1, max=3650))
    compact_every_seconds = Number(validate=validate.Range(min=1, max=3600))

    @validates_schema
    def coarser_lasts_longer(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse tiers that end before the finer ones: a window would find no data for its age."""
        raw, five, hourly = data.get("raw_hours", 48) / 24, data.get("five_minute_days", 14), data.get("hourly_days", 400)
        if five < raw:
            raise ValidationError("must be at least raw_hours / 24", "five_minute_days")
        if hourly < five:
            raise ValidationError("must be at least five_minute_days", "hourly_days")


class AlertsSchema(Schema):
    """How webhook deliveries are retried."""

    first_retry_seconds = Number(validate=validate.Range(min=0.1, max=3600))
    retry_hours = Number(validate=validate.Range(min=0.001, max=24 * 7))
    flap_changes = Count(validate=validate.Range(min=2, max=100))
    flap_minutes = Number(validate=validate.Range(min=0.01, max=24 * 60))


class MetricsSchema(Schema):
    """What /metrics shows."""

    tenant_label = Flag()  # a series per tenant: off by default, as tenants can be many


class ProviderSettingsSchema(Schema):
    """providers.<name>: where its checks and status page are (a proxy, a region, a test's fake), and its rate cap."""

    base_url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    status_page = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    status_component = Text(validate=validate.Length(max=200))  # "": the page's overall indicator
    status_page_interval_seconds = Number(validate=validate.Range(min=10, max=86400))
    max_requests_per_second = Number(validate=validate.Range(min=0.01, max=100_000))


class CorrelationSchema(Schema):
    """When failures across the fleet suggest a provider incident."""

    window_seconds = Number(validate=validate.Range(min=10, max=86400))
    min_tenants = Count(validate=validate.Range(min=1, max=1_000_000))
    min_share = Number(validate=validate.Range(min=0.01, max=1))


class ConfigSchema(Schema):
    """The whole config file."""

    # Bumped with every edit: a prober never applies a file older than the one Redis last took.
    generation = Count(load_default=0, validate=validate.Range(min=0, max=2**53))
    probe = fields.Nested(FileProbeDefaultsSchema, load_default=dict)
    prober = fields.Nested(ProberSchema, load_default=dict)
    admin = fields.Nested(AdminSettingsSchema, load_default=dict)
    history = fields.Nested(HistorySchema, load_default=dict)
    metrics = fields.Nested(MetricsSchema, load_default=dict)
    alerts = fields.Nested(AlertsSchema, load_default=dict)
    tenants = fields.List(fields.Nested(TenantSchema), required=True)
    admin_keys = fields.List(fields.Nested(AdminKeySchema), load_default=list)
    correlation = fields.Nested(CorrelationSchema, load_default=dict)
    providers = fields.Nested(Schema.from_dict({name: fields.Nested(ProviderSettingsSchema) for name in sorted(PROVIDERS)},
                                               name="ProvidersSchema"), load_default=dict)  # providers.<name>, each known one

    @validates_schema
    def unique_tenants_and_keys(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse duplicate tenant ids, a key shared by two tenants, and duplicate admin key ids."""
        admins = _duplicates([k["id"] for k in data.get("admin_keys", [])], "duplicate admin key id")
        if admins:
            raise ValidationError({"admin_keys": {index: {"id": [msg]} for index, msg in admins.items()}})
        tenant_keys = {k["sha256"].lower() for t in data.get("tenants", []) for k in t.get("api_keys", [])}
        shared = {i: {"sha256": ["also a tenant's key: admin keys must be separate"]}
                  for i, k in enumerate(data.get("admin_keys", [])) if k["sha256"].lower() in tenant_keys}
        if shared:
            raise ValidationError({"admin_keys": shared})
        tenants = data.get("tenants", [])
        if data.get("history", {}).get("enabled") is False and any(t.get("webhooks") for t in tenants):
            raise ValidationError({"history": {"enabled": ["webhooks are sent from the events history keeps: leave it on"]}})
        errors: dict[int, dict[str, Any]] = {
            index: {"id": [msg]} for index, msg in _duplicates([t["id"] for t in tenants], "duplicate tenant id").items()
        }
        owner: dict[str, int] = {}
        for t_index, tenant in enumerate(tenants):
            for k_index, key in enumerate(tenant.get("api_keys", [])):
                digest = key["sha256"].lower()
                if owner.setdefault(digest, t_index) != t_index:
                    errors.setdefault(t_index, {}).setdefault("api_keys", {})[k_index] = {
                        "sha256": [f"already a key of tenants[{owner[digest]}]"]
                    }
        if errors:
            raise ValidationError({"tenants": errors})


def _duplicates(values: list[str], message: str) -> dict[int, str]:
    """Return index -> message for each value that repeats an earlier one."""
    seen: set[str] = set()
    errors: dict[int, str] = {}
    for index, value in enumerate(values):
        if value in seen:
            errors[index] = f"{message} {value!r}"
        seen.add(value)
    return errors


class NewTenantSchema(Schema):
    """The body of POST /admin/tenants."""

    id = Id(required=True)


class IntegrationBodySchema(Schema):
    """The body of PUT /admin/tenants/<tid>/integrations/<iid>: the config file's integration, id optional."""

    id = Id()
    # No '"', '\\' or control character: the report is edited in Redis without a JSON encoder (store/catalog.py).
    type = Text(required=True, validate=[validate.Length(min=1, max=64),
                                         validate.Regexp(r'^[^"\\\x00-\x1f\x7f]*\Z', error='may not hold ", \\ or control characters')])
    check = fields.Nested(CheckSchema, metadata={"description": "A built-in provider check: give it or probe, not both"})
    probe = fields.Nested(ProbeSchema, metadata={"description": "A generic HTTP probe: give it or check, not both"})

    @validates_schema
    def stale_after_reachable(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse both a check and a probe, or neither, and a stale_after_seconds a punctual probe could reach (as the file does)."""
        _one_way(data)
        way = "check" if "check" in data else "probe"
        timing = data.get(way, {})
        if "stale_after_seconds" in timing:
            floor = timing.get("interval_seconds", DEFAULT_INTERVAL_S) + timing.get("timeout_seconds", DEFAULT_TIMEOUT_S)
            if timing["stale_after_seconds"] <= floor:
                raise ValidationError({way: {"stale_after_seconds": [f"must exceed interval_seconds + timeout_seconds ({floor:g})"]}})


class ReplaySchema(Schema):
    """The body of POST /admin/tenants/<tid>/webhooks/dead/replay: the dead letters to queue again (none: all)."""

    ids = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list, validate=validate.Length(max=1000))


MAX_WINDOW_S = 7 * 86400  # a longer maintenance window needs "long": true


class MaintenanceSchema(Schema):
    """The body of POST /admin/tenants/<tid>/maintenance: a window, for some integrations or types (none named: all)."""

    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    integrations = fields.List(Id(), load_default=list, validate=validate.Length(max=1000))
    types = fields.List(Text(validate=validate.Length(min=1, max=64)), load_default=list, validate=validate.Length(max=100))
    note = Text(load_default="", validate=validate.Length(max=500))
    long = Flag(load_default=False)

    @validates_schema
    def sensible_span(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Refuse a window that ends before it starts, or lasts over 7 days without "long": true."""
        if "starts_at" not in data or "ends_at" not in data:
            return
        for name in ("starts_at", "ends_at"):
            if not 2000 <= data[name].year <= 2999:  # as given: converting year 1 or 9999 to UTC can overflow
                raise ValidationError("must be in the years 2000 to 2999", name)
        span = (data["ends_at"] - data["starts_at"]).total_seconds()
        if span <= 0:
            raise ValidationError("must be after starts_at", "ends_at")
        if span > MAX_WINDOW_S and not data.get("long"):
            raise ValidationError('the window is longer than 7 days: send "long": true if it is meant to be', "ends_at")
