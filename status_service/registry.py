"""Load and validate the config file into a Registry; the only reader of that file."""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml
from marshmallow import ValidationError

from .model import (
    DEFAULT_CONCURRENCY, DEFAULT_FAILURE_THRESHOLD, DEFAULT_MAX_INTEGRATIONS, DEFAULT_INTERVAL_S, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TICK_S, DEFAULT_TIMEOUT_S, STALE_AFTER_INTERVALS,
    AlertOptions, CorrelationOptions, HistoryOptions, Integration, ProberOptions, ProbeSpec, ProviderOptions, Registry, Tenant, Webhook,
)
from .providers import DEFAULT_MAX_REQUESTS_PER_SECOND, PROVIDERS
from .schemas import ConfigSchema

# libyaml's loader when PyYAML has it: a registry of 10,000 integrations parses several times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """The config file cannot be used; `problems` names each bad field by its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid config: " + "; ".join(problems))


def load(path: str | Path, environ: Mapping[str, str]) -> Registry:
    """Read, expand and validate a config file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read: {exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"]) from None
    return parse(text, environ, source)


def parse(text: str, environ: Mapping[str, str], source: str = "<config>") -> Registry:
    """Expand and validate config text."""
    try:
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(source, [f"{where}{problem}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the file must be a mapping with a 'tenants' list"])
    try:
        shared = _shared_node(raw, "", set())
    except RecursionError:
        raise ConfigError(source, ["the document is nested too deeply"]) from None
    if shared is not None:
        # A few lines of aliases can expand to billions of nodes ("billion laughs"); no config needs them.
        raise ConfigError(source, [f"{shared}: YAML anchors and aliases are not allowed"])
    missing = sorted(set(_unset_variables(raw, environ, "")))
    if missing:
        raise ConfigError(source, [f"{where}: environment variable {name} is not set" for where, name in missing])
    try:
        data = ConfigSchema().load(_expand(raw, environ))
    except ValidationError as exc:
        raise ConfigError(source, [f"{where}: {msg}" for where, msg in _flatten(exc.messages, "")]) from None
    too_soon = list(_stale_too_soon(data))
    if too_soon:
        raise ConfigError(source, too_soon)
    return _build(data)


def _shared_node(node: Any, where: str, seen: set[int]) -> str | None:
    """Return the path of the first mapping or list reached twice (an alias), or None."""
    if not isinstance(node, (dict, list)):
        return None  # an alias of a scalar cannot grow the document
    if id(node) in seen:
        return where or "<root>"
    seen.add(id(node))
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in children:
        found = _shared_node(value, f"{where}[{key}]" if isinstance(node, list) else _join(where, key), seen)
        if found is not None:
            return found
    return None


def _stale_too_soon(data: dict[str, Any]) -> Iterator[str]:
    """Yield an error for each explicit stale_after_seconds that a punctual probe could reach."""
    defaults = data["probe"]
    timing = {"stale_after_seconds", "interval_seconds", "timeout_seconds"}
    places = [("probe", defaults)] + [
        (f"tenants[{t}].integrations[{n}].{way}", {**defaults, **i[way]})
        for t, tenant in enumerate(data["tenants"])
        for n, i in enumerate(tenant["integrations"])
        for way in ("check" if "check" in i else "probe",)
        if timing & i[way].keys()  # otherwise the defaults' own check covers it
    ]
    for where, p in places:
        if "stale_after_seconds" not in p:
            continue
        # A result is due every interval and may take the whole timeout to land.
        floor = p.get("interval_seconds", DEFAULT_INTERVAL_S) + p.get("timeout_seconds", DEFAULT_TIMEOUT_S)
        if p["stale_after_seconds"] <= floor:
            yield f"{where}.stale_after_seconds: must exceed interval_seconds + timeout_seconds ({floor:g})"


def _unset_variables(node: Any, environ: Mapping[str, str], where: str) -> Iterator[tuple[str, str]]:
    """Yield (path, name) for each ${VAR} whose variable is unset."""
    if isinstance(node, str):
        for name in _VARIABLE.findall(node):
            if name not in environ:
                yield where or "<root>", name
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _unset_variables(value, environ, _join(where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _unset_variables(value, environ, f"{where}[{index}]")


def _expand(node: Any, environ: Mapping[str, str]) -> Any:
    """Return the tree with ${VAR} in every string value replaced from the environment."""
    if isinstance(node, str):
        return _VARIABLE.sub(lambda m: environ[m.group(1)], node)
    if isinstance(node, dict):
        return {key: _expand(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(value, environ) for value in node]
    return node


def _flatten(messages: Any, where: str) -> Iterator[tuple[str, str]]:
    """Yield (path, message) pairs from marshmallow's nested error messages."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                yield from _flatten(value, where)
            elif isinstance(key, int):
                yield from _flatten(value, f"{where}[{key}]")
            else:
                yield from _flatten(value, _join(where, key))
    elif isinstance(messages, list):
        for message in messages:
            yield from _flatten(message, where)
    else:
        text = str(messages).rstrip(".")
        yield where or "<root>", text[:1].lower() + text[1:]


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _build(data: dict[str, Any]) -> Registry:
    """Turn validated data into the frozen registry, applying every default."""
    defaults = data["probe"]
    providers = provider_options(data["providers"])
    tenants = []
    for t in data["tenants"]:
        integrations = tuple(Integration(tenant_id=t["id"], id=i["id"], type=i["type"], probe=spec_of(i, providers, defaults))
                             for i in t["integrations"])
        digests = tuple(dict.fromkeys(k["sha256"].lower() for k in t["api_keys"]))
        hooks = tuple(Webhook(h.get("id") or webhook_id(h["url"]), h["url"], h["secret"], tuple(dict.fromkeys(h["events"])),
                              categories=tuple(dict.fromkeys(h["categories"]))) for h in t["webhooks"])
        tenants.append(Tenant(id=t["id"], key_digests=digests, integrations=integrations, webhooks=hooks))
    prober = data["prober"]
    return Registry(
        tenants=tuple(tenants),
        prober=ProberOptions(
            concurrency=prober.get("concurrency", DEFAULT_CONCURRENCY),
            tick_s=prober.get("tick_seconds", DEFAULT_TICK_S),
        ),
        default_interval_s=defaults.get("interval_seconds", DEFAULT_INTERVAL_S),
        generation=data["generation"],
        admin_keys=tuple((k["id"], k["sha256"].lower()) for k in data["admin_keys"]),
        allow_private_addresses=defaults.get("allow_private_addresses", False),
        max_integrations_per_tenant=data["admin"].get("max_integrations_per_tenant", DEFAULT_MAX_INTEGRATIONS),
        history=history_options(data["history"]),
        metrics_tenant_label=data["metrics"].get("tenant_label", False),
        alerts=AlertOptions(
            first_retry_s=data["alerts"].get("first_retry_seconds", AlertOptions.first_retry_s),
            retry_s=data["alerts"].get("retry_hours", AlertOptions.retry_s / 3600) * 3600.0,
            flap_changes=data["alerts"].get("flap_changes", AlertOptions.flap_changes),
            flap_window_s=data["alerts"].get("flap_minutes", AlertOptions.flap_window_s / 60) * 60.0,
        ),
        providers=providers,
        correlation=CorrelationOptions(
            window_s=float(data["correlation"].get("window_seconds", CorrelationOptions.window_s)),
            min_tenants=data["correlation"].get("min_tenants", CorrelationOptions.min_tenants),
            min_share=float(data["correlation"].get("min_share", CorrelationOptions.min_share)),
        ),
    )


def provider_options(given: Mapping[str, Mapping[str, Any]]) -> tuple[ProviderOptions, ...]:
    """Return every built-in provider's options: the file's providers.<name> over the defaults."""
    return tuple(ProviderOptions(
        name=p.name,
        base_url=given.get(p.name, {}).get("base_url", p.base_url).rstrip("/"),
        status_page=given.get(p.name, {}).get("status_page", p.status_page).rstrip("/"),
        status_component=given.get(p.name, {}).get("status_component", p.component),
        max_requests_per_second=float(given.get(p.name, {}).get("max_requests_per_second", DEFAULT_MAX_REQUESTS_PER_SECOND)),
        status_page_interval_s=float(given.get(p.name, {}).get("status_page_interval_seconds", ProviderOptions.status_page_interval_s)),
    ) for p in PROVIDERS.values())


def spec_of(integration: Mapping[str, Any], providers: tuple[ProviderOptions, ...], defaults: Mapping[str, Any] | None = None,
            guarded: bool = False) -> ProbeSpec:
    """Return how to probe an integration: its generic probe, or its provider check's request to the provider's base URL.

    A provider check goes only where the file's providers section (or the built-in default) says,
    never where an API user says: it is no guarded probe.
    """
    defaults = defaults or {}
    if "probe" in integration:
        return probe_spec({**defaults, **integration["probe"]}, guarded)
    check = integration["check"]
    provider = PROVIDERS[check["provider"]]
    base = next(o.base_url for o in providers if o.name == provider.name) if providers else provider.base_url
    sent = provider.request(check["credentials"])
    spec = probe_spec({**defaults, **check, "url": base + sent.path})
    return replace(spec, method=sent.method, headers=sent.headers, body=sent.body, provider=provider.name,
                   low_balance=check.get("low_balance"))


def webhook_id(url: str) -> str:
    """Return the id of a config file's webhook that names none: its URL's, so reordering the list moves no delivery."""
    return "file-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def history_options(h: dict[str, Any]) -> HistoryOptions:
    """Return what history keeps, with the built-in defaults for what the file leaves out."""
    base = HistoryOptions()
    return HistoryOptions(
        enabled=h.get("enabled", base.enabled),
        raw_s=h.get("raw_hours", base.raw_s / 3600) * 3600.0,
        five_minute_s=h.get("five_minute_days", base.five_minute_s / 86400) * 86400.0,
        hourly_s=h.get("hourly_days", base.hourly_s / 86400) * 86400.0,
        events_s=h.get("events_days", base.events_s / 86400) * 86400.0,
        compact_every_s=float(h.get("compact_every_seconds", base.compact_every_s)),
    )


def probe_spec(p: dict[str, Any], guarded: bool = False) -> ProbeSpec:
    """Return the spec of a validated probe, with the built-in defaults for what it leaves out."""
    interval = float(p.get("interval_seconds", DEFAULT_INTERVAL_S))
    return ProbeSpec(
        url=p["url"],
        method=p.get("method", "GET"),
        headers=tuple(p.get("headers", {}).items()),
        expect_status=tuple(p.get("expect_status", ())),
        expect_json=tuple(p.get("expect_json", {}).items()),
        timeout_s=float(p.get("timeout_seconds", DEFAULT_TIMEOUT_S)),
        interval_s=interval,
        failure_threshold=p.get("failure_threshold", DEFAULT_FAILURE_THRESHOLD),
        success_threshold=p.get("success_threshold", DEFAULT_SUCCESS_THRESHOLD),
        stale_after_s=float(p.get("stale_after_seconds", STALE_AFTER_INTERVALS * interval)),
        max_body_bytes=p.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        guarded=guarded,
    )
