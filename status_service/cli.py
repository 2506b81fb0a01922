"""The command line, through Flask's: `flask --app wsgi <command>`; every command has --help.

keys create/revoke/badge, config check, probe --once, status, registry sync. They use the same
settings (environment) as the processes; none prints a key or token but the one it makes, or any
value of the config file.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import report
from .fetch import Fetcher
from .model import Integration, Outcome, Registry
from .registry import ConfigError, load
from .schemas import ID_PATTERN
from .settings import Settings, credentials_cipher
from .store import Store, StoreUnavailable
from .store.admin import Admin
from .store.badges import Badges
from .store.catalog import Catalog
from .web.auth import BADGE_PREFIX, digest, new_key

keys = AppGroup("keys", help="Issue and revoke tenants' API keys, and issue badge tokens.")
config = AppGroup("config", help="Check the config file.")
registry = AppGroup("registry", help="Write the config file's registry to Redis.")


def install(app: Flask, settings: Settings) -> None:
    """Give the app its commands."""
    app.extensions["status_settings"] = settings
    for command in (keys, config, registry, probe, status):
        app.cli.add_command(command)


def _store() -> Store:
    return current_app.extensions["status_web"].store


def _settings() -> Settings:
    return current_app.extensions["status_settings"]


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _tenant_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        _fail("--tenant: must be 1-64 characters of letters, digits and _ . : - (starting with a letter or digit)")
    return value


def _registry(path: str | None = None) -> Registry:
    try:
        return load(path or _settings().config_path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {exc.source}: {problem}", err=True)
        sys.exit(1)


@keys.command("create")
@click.option("--tenant", "tenant_id", required=True, help="The tenant the key is for.")
def create_key(tenant_id: str) -> None:
    """Issue a key and print it, this once: only its digest is kept."""
    key = new_key()
    try:
        key_id = Admin(_store()).issue_key(_tenant_id(tenant_id), digest(key), "cli", report.iso(time.time()))
    except StoreUnavailable as exc:
        _fail(f"Redis: {exc}")
    if key_id is None:
        _fail(f"no tenant {tenant_id}")
    click.echo(f"id:  {key_id}")
    click.echo(f"key: {key}")


@keys.command("badge")
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose badge it reads.")
def create_badge_token(tenant_id: str) -> None:
    """Issue a badge token (for /status/badge.svg?token=...) and print it, this once; it reads nothing else."""
    token, at = new_key(BADGE_PREFIX), report.iso(time.time())
    try:
        if Admin(_store()).tenant(_tenant_id(tenant_id)) is None:
            _fail(f"no tenant {tenant_id}")
        token_id = Badges(_store()).issue(digest(token), tenant_id, at)
        Catalog(_store()).note(tenant_id, "cli", "badge.create", f"tenants/{tenant_id}/badge-tokens/{token_id}", at)
    except StoreUnavailable as exc:
        _fail(f"Redis: {exc}")
    click.echo(f"id:    {token_id}")
    click.echo(f"token: {token}")


@keys.command("revoke")
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose key it is.")
@click.argument("key_id")
def revoke_key(tenant_id: str, key_id: str) -> None:
    """Revoke a key made through the admin API or this command (KEY_ID as `keys create` printed it)."""
    try:
        done = Admin(_store()).delete_key(_tenant_id(tenant_id), key_id, "cli", report.iso(time.time()))
    except StoreUnavailable as exc:
        _fail(f"Redis: {exc}")
    if not done:
        _fail(f"tenant {tenant_id} has no key {key_id}")
    click.echo(f"revoked {key_id}")


@config.command("check")
@click.argument("path", required=False)
def check_config(path: str | None) -> None:
    """Validate the config file (PATH, or STATUS_CONFIG's); print every error with its place, never a value."""
    found = _registry(path)
    integrations = len(found.integrations)
    click.echo(f"ok: {path or _settings().config_path}: generation {found.generation}, {len(found.tenants)} tenants, "
               f"{integrations} integrations")


@click.command("probe")
@with_appcontext
@click.option("--once", is_flag=True, required=True, help="Probe each integration once (required: there is no other mode).")
@click.option("--tenant", "tenant_id", help="Only this tenant's integrations.")
@click.option("--record", is_flag=True, help="Write the results, as a prober would (otherwise nothing is written).")
def probe(once: bool, tenant_id: str | None, record: bool) -> None:
    """Probe the config file's integrations now and print id, type, status, reason and ms."""
    if not once:
        _fail("--once is required")
    found = _registry()
    chosen = [i for i in found.integrations if tenant_id is None or i.tenant_id == _tenant_id(tenant_id)]
    if tenant_id is not None and found.tenant(tenant_id) is None:
        _fail(f"the config file has no tenant {tenant_id}")
    if record:
        try:
            rows = _recorded(found, chosen, tenant_id)
        except StoreUnavailable as exc:
            _fail(f"Redis: {exc}")
    else:
        fetcher = Fetcher(pool_size=16)
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda i: fetcher.probe(i.probe), chosen))
        fetcher.close()
        rows = [_row(i, o) for i, o in zip(chosen, outcomes)]
    _table(rows)


def _row(integration: Integration, outcome: Outcome) -> dict[str, Any]:
    return {"tenant": integration.tenant_id, "id": integration.id, "type": integration.type,
            "status": "healthy" if outcome.ok else "unhealthy", "reason": outcome.reason or "", "ms": outcome.latency_ms}


def _recorded(found: Registry, chosen: list[Integration], tenant_id: str | None) -> list[dict[str, Any]]:
    """Probe the chosen integrations through a prober of theirs (due now, recorded under claims); read back what it recorded.

    The prober knows only the chosen tenants of the file, and no admin API integration: any other
    integration it claims it hands back, unprobed. It never seeds: the fleet's registry must be
    the file's already (`registry sync`), or nothing is recorded.
    """
    from .prober import Prober  # here, not at the top: `python -m status_service.prober` imports this package first

    store = _store()
    seeded = store.seeded_generation()
    if seeded is None or seeded != found.generation:
        _fail(f"Redis holds {'no registry' if seeded is None else f'generation {seeded}'}, not the file's {found.generation}: "
              "run `registry sync` first")
    mine = replace(found, tenants=tuple(t for t in found.tenants if tenant_id is None or t.id == tenant_id))
    prober = Prober(mine, store)
    prober.seeded = prober.fingerprint  # seeded already (checked above): never seed from a part of the file
    started = time.time()
    try:
        store._call(lambda: store.client.zadd(store.due_key(), {i.member: 0 for i in chosen}))
        prober.tick()
        prober.drain()
        states = store.states({t.id: [i.id for i in chosen if i.tenant_id == t.id] for t in mine.tenants})
    finally:
        prober.stop(timeout_s=0)
    rows = []
    for i in chosen:
        state = states.get(i.tenant_id, {}).get(i.id)
        fresh = state is not None and state.checked_at >= started - 1
        rows.append({"tenant": i.tenant_id, "id": i.id, "type": i.type, "status": state.status.value if fresh else "unknown",
                     "reason": (state.reason or "") if fresh else "not_recorded", "ms": state.latency_ms if fresh else None})
    return rows


def _table(rows: list[dict[str, Any]]) -> None:
    columns = ["tenant", "id", "type", "status", "reason", "ms"]
    cells = [[str(r[c]) if r[c] is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[n]) for row in cells]) for n, c in enumerate(columns)]
    for line in [columns] + cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


@click.command("status")
@with_appcontext
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose document to print.")
def status(tenant_id: str) -> None:
    """Print what GET /status says to the tenant's key now."""
    store = _store()
    try:
        found = store.report(_tenant_id(tenant_id))
    except StoreUnavailable as exc:
        _fail(f"Redis: {exc}")
    if found is None:
        _fail(f"no report for tenant {tenant_id} (no such tenant, or no prober has written one yet)")
    click.echo(json.dumps(report.current(found.body, found.stale, found.until, time.time()), indent=2, ensure_ascii=False))


@registry.command("sync")
def sync() -> None:
    """Write the config file's registry to Redis, unless Redis holds a newer generation's."""
    from .prober import Prober  # as in _recorded

    found = _registry()
    store = _store()
    prober = Prober(found, store, cipher=credentials_cipher(_settings()))
    try:
        prober.ensure_seeded(time.time())
        seeded = store.seeded_generation()
    except StoreUnavailable as exc:
        _fail(f"Redis: {exc}")
    finally:
        prober.stop(timeout_s=0)
    if seeded is None or seeded > found.generation:
        _fail(f"not written: Redis holds generation {seeded}, newer than the file's {found.generation}")
    click.echo(f"synced generation {found.generation}: {len(found.tenants)} tenants, {len(found.integrations)} integrations")
