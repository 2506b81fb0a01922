"""A prober's copy of the integrations made through the admin API, kept current change by change."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from .cipher import CipherError
from .model import Integration, ProviderOptions, split_member
from .registry import spec_of
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
    unreadable: list[str] = field(default_factory=list)  # ids whose definition no key of this prober opens


def _rev_key(rev: str) -> tuple[int, int]:
    ms, _, seq = rev.partition("-")
    return int(ms or 0), int(seq or 0)


class Catalog:
    """Tenant id -> ApiTenant; applies what the store's catalog reads, decrypting each probe once."""

    def __init__(self, open_probe: Callable[[str], str], guarded: bool, providers: tuple[ProviderOptions, ...] = ()) -> None:
        self.open_probe = open_probe  # the cipher's open(): token -> probe (or check) JSON
        self.guarded = guarded  # untrusted probes go through the address policy unless the file lifts it
        self.providers = providers  # where provider checks go: the file's, never the API's
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
        """Take a tenant's change; return what it changed, or None if nothing did.

        A definition that cannot be read (no key opens it) is left out, and the tenant is read
        whole again next time: its rev is forgotten, so no report of it is written meanwhile.
        """
        if change.kind == "same":
            return None
        if change.kind == "gone":
            return Applied([], [], whole=True) if self.tenants.pop(tenant_id, None) is not None else None
        definitions: dict[str, tuple[Integration, tuple[int, int]] | None] = {}
        unreadable = []
        for integration_id, definition in (change.definitions or {}).items():
            try:
                definitions[integration_id] = None if definition is None else (
                    self._integration(tenant_id, integration_id, definition), _rev_key(str(definition["order"])))
            except (CipherError, ValueError, KeyError):
                unreadable.append(integration_id)
        tenant = self.tenants.get(tenant_id)
        whole = change.kind == "full" or tenant is None
        if whole:
            tenant = self.tenants[tenant_id] = ApiTenant(change.incarnation, change.rev)
        tenant.incarnation, tenant.rev = change.incarnation, change.rev
        fresh, removed, unordered = [], [], False
        for integration_id in unreadable:  # not probed by this prober: another may read it
            if tenant.integrations.pop(integration_id, None) is not None:
                del tenant.order[integration_id]
                removed.append(integration_id)
        for integration_id, made in definitions.items():
            held = tenant.order.get(integration_id)
            if held is not None and (made is None or made[1] != held):  # removed, or removed and made again
                del tenant.integrations[integration_id], tenant.order[integration_id]
                removed.append(integration_id)
            if made is None:
                continue
            integration, order = made
            if tenant.integrations.get(integration_id) != integration:
                fresh.append(integration)
            if integration_id not in tenant.order and tenant.order and order < next(reversed(tenant.order.values())):
                unordered = True  # a full read brings them in any order
            tenant.integrations[integration_id] = integration  # a replaced one keeps its place
            tenant.order[integration_id] = order
        if unordered:
            ids = sorted(tenant.order, key=tenant.order.__getitem__)
            tenant.integrations = {i: tenant.integrations[i] for i in ids}
            tenant.order = {i: tenant.order[i] for i in ids}
        if unreadable:
            tenant.rev = ""
        # Reordered: a view edited in place would not match, so it is built again.
        return Applied(fresh, removed, whole or unordered, unreadable)

    def _integration(self, tenant_id: str, integration_id: str, definition: dict[str, object]) -> Integration:
        way = "check" if "check" in definition else "probe"
        how = json.loads(self.open_probe(str(definition[way])))
        return Integration(tenant_id, integration_id, str(definition["type"]),
                           spec_of({way: how}, self.providers, guarded=self.guarded), rev=str(definition["rev"]))
