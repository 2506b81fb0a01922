"""The admin API's edits of a tenant's report, done inside Redis: always the report built from scratch."""
from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings, strategies as st

from status_service import report
from status_service.model import Health, Integration, ProbeSpec, State
from status_service.store.catalog import Catalog

NOW = 1_800_000_000.0
SPEC = ProbeSpec(url="https://x.example/")
KINDS = st.sampled_from(["MJ", "DALL-E", "Runway", "Ideogram v2 (ü)", "a/b {}[],:"])


def built(order: list[str], kinds: dict[str, str], states: dict[str, State]) -> dict:
    return report.build_report([Integration("t", i, kinds[i], SPEC) for i in order], states, NOW)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.lists(st.tuples(KINDS, st.sampled_from([None, Health.HEALTHY, Health.UNHEALTHY])), max_size=8),
    edits=st.lists(st.tuples(st.integers(0, 10), st.one_of(st.none(), KINDS)), max_size=10),
)
def test_an_edited_report_is_the_report_built_from_the_edited_integrations(store, start, edits) -> None:
    tenant_id = "t" + uuid.uuid4().hex[:8]
    order = [str(n) for n in range(len(start))]
    kinds = {str(n): kind for n, (kind, _) in enumerate(start)}
    states = {str(n): State(health, NOW - 1, latency_ms=3) for n, (_, health) in enumerate(start) if health is not None}
    store.client.set(store.registry_key(tenant_id), "api:inc:0")
    store.client.hset(store.integrations_key(tenant_id), mapping={i: json.dumps({"type": kinds[i], "order": "0-0"}) for i in order} or {"-": "{}"})
    store.client.hdel(store.integrations_key(tenant_id), "-")
    store.client.hset(store.report_key(tenant_id), mapping={"v": 1, "body": report.encode(built(order, kinds, states))})
    catalog = Catalog(store)
    for target, kind in edits:
        iid = str(target)
        if kind is None:
            done = catalog.change(tenant_id, iid, None, b"", report.iso(NOW))
            assert (done == "absent") == (iid not in kinds)
            if iid in kinds:
                order.remove(iid)
                del kinds[iid]
                states.pop(iid, None)
        else:
            row = report.encode(report.row(Integration(tenant_id, iid, kind, SPEC), None, NOW))
            created, _ = catalog.change(tenant_id, iid, {"type": kind, "probe": "sealed", "created_at": "then", "updated_at": "then"},
                                        row, report.iso(NOW), 100)
            assert created == (iid not in kinds)
            if iid not in kinds:
                order.append(iid)
            kinds[iid] = kind
            states.pop(iid, None)  # a changed integration starts over
        body = store.client.hget(store.report_key(tenant_id), "body")
        assert json.loads(body) == built(order, kinds, states)
    for key in store.tenant_keys(tenant_id) + [store.registry_key(tenant_id)]:
        store.client.delete(key)


def test_percentages_are_rounded_and_written_as_python_writes_them(store) -> None:
    tenant_id = "pct"
    store.client.set(store.registry_key(tenant_id), "api:inc:0")
    order, kinds = ["h"], {"h": "MJ"}
    states = {"h": State(Health.HEALTHY, NOW - 1)}
    store.client.hset(store.report_key(tenant_id), mapping={"v": 1, "body": report.encode(built(order, kinds, states))})
    catalog = Catalog(store)
    for n in range(14):  # 1 healthy of 2, of 3, ... of 15: 50.0, 33.33, 12.5, 9.09, 6.67, ...
        iid = f"new{n}"
        row = report.encode(report.row(Integration(tenant_id, iid, "MJ", SPEC), None, NOW))
        catalog.change(tenant_id, iid, {"type": "MJ", "probe": "sealed", "created_at": "t", "updated_at": "t"}, row, report.iso(NOW), 100)
        order.append(iid)
        kinds[iid] = "MJ"
        assert store.client.hget(store.report_key(tenant_id), "body") == report.encode(built(order, kinds, states))  # byte for byte
