"""Pure: a provider's public status page (Atlassian Statuspage, incident.io's compatible JSON, Instatus) to its state.

A page that cannot be read is unknown (None), never down: pages move between platforms often.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STATUSPAGE, INSTATUS = "statuspage", "instatus"
# Where each format keeps its JSON, under the page's base URL. summary.json carries both the page's
# indicator and its components (incident.io's may leave some components out: then the indicator decides).
PATHS = {STATUSPAGE: "/api/v2/summary.json", INSTATUS: "/summary.json"}
INDICATORS = ("none", "minor", "major", "critical", "maintenance")
TROUBLE = ("minor", "major", "critical")  # the indicators that are an incident (maintenance is none)
# A Statuspage component's status, as the page's indicator would say it.
_COMPONENT = {"operational": "none", "degraded_performance": "minor", "partial_outage": "major", "major_outage": "critical",
              "under_maintenance": "maintenance"}
_INSTATUS = {"UP": "none", "UNDERMAINTENANCE": "maintenance", "HASISSUES": "major"}


@dataclass(frozen=True)
class PageState:
    """What a status page says now: an indicator (none, minor, major, critical, maintenance) and its words."""

    indicator: str
    description: str


def parse(page_format: str, body: bytes, component: str = "") -> PageState | None:
    """Return what a page's JSON says, of `component` where it lists it, else of the whole page; None if it cannot be read."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    try:
        return _statuspage(document, component) if page_format == STATUSPAGE else _instatus(document)
    except (TypeError, ValueError, AttributeError):  # a shape no format has (a number for a list, a list for a word): unknown
        return None


def _statuspage(document: dict[str, Any], component: str) -> PageState | None:
    for item in document.get("components") or ():
        if isinstance(item, dict) and component and item.get("name") == component and isinstance(item.get("status"), str) \
                and item["status"] in _COMPONENT:
            return PageState(_COMPONENT[item["status"]], f"{component}: {str(item['status']).replace('_', ' ')}")
    status = document.get("status")
    if not isinstance(status, dict) or status.get("indicator") not in INDICATORS:
        return None
    return PageState(status["indicator"], _text(status.get("description")))


def _instatus(document: dict[str, Any]) -> PageState | None:
    page = document.get("page")
    if not isinstance(page, dict) or not isinstance(page.get("status"), str):
        return None
    # Newer pages say more than UP, HASISSUES and UNDERMAINTENANCE (ALL..., SOME..., ONE...): any other is trouble.
    indicator = _INSTATUS.get(page["status"], "minor")
    incidents = [i.get("name") for i in document.get("activeIncidents") or () if isinstance(i, dict) and i.get("name")]
    return PageState(indicator, _text(incidents[0] if incidents else page["status"].lower()))


def _text(value: Any) -> str:
    """Return a page's words as plain text of bounded length (they are shown to customers)."""
    return str(value or "")[:200]
