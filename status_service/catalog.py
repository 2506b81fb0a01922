"""A prober's copy of the integrations made through the admin API, kept current change by change."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from .model import Integration, schedule_member, split_member
from .registry import probe_spec
from .store.catalog import TenantChange


@dataclass
class ApiTenant:
    """One admin API tenant as last read: its incarnation, the rev of its last change, its integrations."""

    incarnation: str
    rev: str
    integrations: dict[str, Integration] = field(default_factory=dict)  # in creation order
    order: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> creation rev, for the order


@dataclass(frozen=True)
class Applied:
    """What a change did to a tenant: integrations new or changed, ids removed, or all of it anew (whole)."""

    fresh: list[Integration]
    removed: list[str]
    whole: bool  # read whole, or gone: a view of the tenant must be built again


def _rev_key(rev: str) -> tuple[int, int]:
    ms, _, seq = rev.partition("-")
    return int(ms or 0), int(seq or 0)


class Catalog:
    """Tenant id -> ApiTenant; applies what the store's catalog reads, decrypting each probe once."""

    def __init__(self, open_probe: Callable[[str], str], guarded: bool) -> None:
        self.open_probe = open_probe  # the cipher's open(): token -> probe JSON
        self.guarded = guarded  # untrusted probes go through the address policy unless the file lifts it
        self.tenants: dict[str, ApiTenant] = {}

    def integration(self, member: str) -> Integration | None:
        """Return the admin API integration with this schedule name, if there is one."""
        tenant_id, integration_id = split_member(member)
        tenant = self.tenants.get(tenant_id)
        return tenant.integrations.get(integration_id) if tenant else None

    def known(self) -> dict[str, tuple[str, str]]:
        """Return tenant -> (incarnation, rev) of every tenant held: what to ask the store about."""
        return {t: (a.incarnation, a.rev) for t, a in self.tenants.items()}

    def apply(self, tenant_id: str, change: TenantChange) -> Applied | None:
        """Take a tenant's change; return what it changed, or None if nothing did."""
        if change.kind == "same":
            return None
        if change.kind == "gone":
            return Applied([], [], whole=True) if self.tenants.pop(tenant_id, None) is not None else None
        tenant = self.tenants.get(tenant_id)
        whole = change.kind == "full" or tenant is None
        if whole:
            tenant = self.tenants[tenant_id] = ApiTenant(change.incarnation, change.rev)
        tenant.incarnation, tenant.rev = change.incarnation, change.rev
        fresh, removed, unordered = [], [], False
        for integration_id, definition in (change.definitions or {}).items():
            if definition is None:
                if tenant.integrations.pop(integration_id, None) is not None:
                    removed.append(integration_id)
                tenant.order.pop(integration_id, None)
                continue
            probe = json.loads(self.open_probe(definition["probe"]))
            integration = Integration(tenant_id, integration_id, definition["type"],
                                      probe_spec(probe, guarded=self.guarded), rev=definition["rev"])
            if tenant.integrations.get(integration_id) != integration:
                fresh.append(integration)
            order = _rev_key(definition["order"])
            if integration_id not in tenant.order and tenant.order and order < next(reversed(tenant.order.values())):
                unordered = True  # a full read brings them in any order
            tenant.integrations[integration_id] = integration
            tenant.order[integration_id] = order
        if unordered:
            ids = sorted(tenant.order, key=tenant.order.__getitem__)
            tenant.integrations = {i: tenant.integrations[i] for i in ids}
            tenant.order = {i: tenant.order[i] for i in ids}
        return Applied(fresh, removed, whole)

    def members(self, tenant_id: str) -> list[str]:
        """Return the schedule names of a tenant's integrations."""
        tenant = self.tenants.get(tenant_id)
        return [schedule_member(tenant_id, i) for i in tenant.integrations] if tenant else []
