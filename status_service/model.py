"""Plain data shared by every part of the service: the registry, probe outcomes and states."""
from __future__ import annotations

import enum
import hashlib
from dataclasses import astuple, dataclass, field
from typing import Any


# Defaults, documented once in config/status.example.yaml.
DEFAULT_INTERVAL_S = 30.0
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_FAILURE_THRESHOLD = 2
DEFAULT_SUCCESS_THRESHOLD = 1
STALE_AFTER_INTERVALS = 3  # a result older than this many intervals is reported as unknown
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_CONCURRENCY = 64
DEFAULT_TICK_S = 1.0
DEFAULT_MAX_INTEGRATIONS = 10_000  # per tenant, through the admin API
INVALID_CREDENTIALS_BACKOFF = 10  # a provider check that found its credentials invalid probes at this many intervals
BACKOFF_REASONS = ("invalid_credentials", "forbidden")  # credentials a provider refused: they do not mend by themselves


class Health(str, enum.Enum):
    """The health of one integration as customers see it."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"
    MAINTENANCE = "maintenance"  # inside a maintenance window: left out of counts, percentages and alerts


@dataclass(frozen=True)
class ProbeSpec:
    """How to probe one integration, with every default already applied."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold credentials
    expect_status: tuple[int, ...] = ()  # empty: any 2xx
    expect_json: tuple[tuple[str, Any], ...] = ()  # dotted path -> expected value
    timeout_s: float = DEFAULT_TIMEOUT_S
    interval_s: float = DEFAULT_INTERVAL_S
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    stale_after_s: float = STALE_AFTER_INTERVALS * DEFAULT_INTERVAL_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    guarded: bool = False  # untrusted (not from the config file): public addresses only (see policy.py)
    provider: str = ""  # a built-in provider check's (providers/): its judge reads the answer, not expect_*
    body: bytes | None = field(default=None, repr=False)  # what the request sends, for a check that must send one
    low_balance: float | None = None  # a provider check's balance under this is shown as low_balance

    def backs_off(self, reason: str | None) -> bool:
        """Return whether a result with this reason waits INVALID_CREDENTIALS_BACKOFF intervals: a provider check's refused credentials.

        Every tenant's dead keys share this service's address, and a provider may ban an address
        that keeps sending them (Discord: 10,000 answers of 401, 403 or 429 in 10 minutes).
        """
        return bool(self.provider) and reason in BACKOFF_REASONS

    def stale_after(self, reason: str | None, wait_s: float = 0.0) -> float:
        """Return how long a result with this reason stays fresh: stretched as far as its backoff, and the wait a provider asked for."""
        return (self.stale_after_s * INVALID_CREDENTIALS_BACKOFF if self.backs_off(reason) else self.stale_after_s) + wait_s


@dataclass(frozen=True)
class Integration:
    """A customer's account on one provider, and how to probe it."""

    tenant_id: str
    id: str
    type: str
    probe: ProbeSpec
    rev: str = ""  # of its definition, for one made through the admin API: a result of another rev is dropped

    @property
    def member(self) -> str:
        """Return the name this integration has in the shared probe schedule."""
        return schedule_member(self.tenant_id, self.id)


@dataclass(frozen=True)
class Webhook:
    """Where a tenant's events go: its URL, signing secret and the event types it wants (empty: all)."""

    id: str
    url: str
    secret: str = field(repr=False)
    events: tuple[str, ...] = ()
    guarded: bool = False  # made through the admin API: public addresses only (see policy.py)
    categories: tuple[str, ...] = ()  # reason categories it wants (empty: all); see webhooks.wanted


@dataclass(frozen=True)
class Window:
    """A maintenance window of a tenant: [starts_at, ends_at), for some integrations or types (none named: all)."""

    id: str
    starts_at: float
    ends_at: float
    integrations: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    note: str = ""

    def covers(self, integration: Integration, at: float) -> bool:
        """Return whether the integration is inside this window at `at`."""
        if not self.starts_at <= at < self.ends_at:
            return False
        if not self.integrations and not self.types:
            return True
        return integration.id in self.integrations or integration.type in self.types


@dataclass(frozen=True)
class Tenant:
    """A customer: its API key digests, its integrations in registration order, and its webhooks."""

    id: str
    key_digests: tuple[str, ...]
    integrations: tuple[Integration, ...]
    webhooks: tuple[Webhook, ...] = ()


@dataclass(frozen=True)
class ProberOptions:
    """How one prober process runs."""

    concurrency: int = DEFAULT_CONCURRENCY
    tick_s: float = DEFAULT_TICK_S


@dataclass(frozen=True)
class HistoryOptions:
    """What history keeps, and for how long (seconds)."""

    enabled: bool = True
    raw_s: float = 48 * 3600.0  # every check, and each scope's minute points
    five_minute_s: float = 14 * 86400.0
    hourly_s: float = 400 * 86400.0
    events_s: float = 400 * 86400.0
    compact_every_s: float = 60.0  # how far behind the newest check rollups and points may fall (and SETTLE_S more)

    def keep_s(self, size_s: int) -> float:
        """Return how long data of a resolution (60, 300 or 3600 s) is kept."""
        return {60: self.raw_s, 300: self.five_minute_s}.get(size_s, self.hourly_s)


@dataclass(frozen=True)
class AlertOptions:
    """How webhook deliveries are retried, and when an integration counts as flapping."""

    first_retry_s: float = 5.0  # the first retry comes within this; each later one waits twice as long
    retry_s: float = 24 * 3600.0  # an event not delivered by then goes to the dead letters
    flap_changes: int = 5  # this many status changes within flap_window_s: flapping, its alerts held
    flap_window_s: float = 30 * 60.0  # and steady this long: settled, one alert says where


@dataclass(frozen=True)
class CorrelationOptions:
    """When failures across the fleet suggest a provider incident (see incidents.py)."""

    window_s: float = 300.0
    min_tenants: int = 3
    min_share: float = 0.5


@dataclass(frozen=True)
class ProviderOptions:
    """Where one provider's checks go and how fast: the file's providers.<name>, over the built-in defaults."""

    name: str
    base_url: str
    status_page: str
    status_component: str  # the page's component that stands for the API ("": the page's overall indicator)
    max_requests_per_second: float
    status_page_interval_s: float = 60.0  # how often the fleet polls the page


@dataclass(frozen=True)
class Registry:
    """Everything the config file declares, validated."""

    tenants: tuple[Tenant, ...]
    prober: ProberOptions = field(default_factory=ProberOptions)
    default_interval_s: float = DEFAULT_INTERVAL_S
    generation: int = 0  # the file's; a prober never seeds Redis from an older one
    admin_keys: tuple[tuple[str, str], ...] = ()  # (id, SHA-256 digest) of each key of the admin API
    allow_private_addresses: bool = False  # integrations made through the admin API may go anywhere
    max_integrations_per_tenant: int = DEFAULT_MAX_INTEGRATIONS
    history: HistoryOptions = field(default_factory=HistoryOptions)
    metrics_tenant_label: bool = False  # /metrics labels the integrations' counts by tenant
    alerts: AlertOptions = field(default_factory=AlertOptions)
    providers: tuple[ProviderOptions, ...] = ()  # every built-in provider's, defaults applied
    correlation: CorrelationOptions = field(default_factory=CorrelationOptions)
    integrations: tuple[Integration, ...] = field(init=False, repr=False, compare=False)  # every tenant's, in order

    def integration(self, member: str) -> Integration | None:
        """Return the integration with this schedule name, if it is registered."""
        return self._by_member.get(member)

    def tenant(self, tenant_id: str) -> Tenant | None:
        """Return the tenant with this id, if it is registered."""
        return self._by_tenant.get(tenant_id)

    def __post_init__(self) -> None:
        # Derived once: a frozen registry never changes, and probers consult these constantly.
        integrations = tuple(i for t in self.tenants for i in t.integrations)
        object.__setattr__(self, "integrations", integrations)
        object.__setattr__(self, "_by_tenant", {t.id: t for t in self.tenants})
        object.__setattr__(self, "_by_member", {i.member: i for i in integrations})


def tenant_fingerprint(integrations: tuple[Integration, ...]) -> str:
    """Return a short digest of a tenant's integrations and their probes, headers included."""
    return hashlib.sha256(repr(tuple(astuple(i) for i in integrations)).encode()).hexdigest()[:16]


# Tenant and integration ids never contain this unit separator (the schema refuses it).
MEMBER_SEP = "\x1f"


def schedule_member(tenant_id: str, integration_id: str) -> str:
    """Return the schedule name of an integration."""
    return f"{tenant_id}{MEMBER_SEP}{integration_id}"


def split_member(member: str) -> tuple[str, str]:
    """Return (tenant_id, integration_id) from a schedule name."""
    tenant_id, _, integration_id = member.partition(MEMBER_SEP)
    return tenant_id, integration_id


@dataclass(frozen=True)
class Outcome:
    """What one probe observed: success, or failure with a short reason."""

    ok: bool
    reason: str | None = None
    latency_ms: int | None = None
    balance: float | None = None  # what a provider check read of the account's credit, where the provider says
    retry_after_s: float | None = None  # how long the provider asked us to wait (Retry-After, retry_after)

    @classmethod
    def failed(cls, reason: str, latency_ms: int | None = None) -> "Outcome":
        """Return a failed outcome."""
        return cls(ok=False, reason=reason, latency_ms=latency_ms)


@dataclass(frozen=True)
class State:
    """The recorded health of one integration after thresholds are applied."""

    status: Health
    checked_at: float  # epoch seconds of the last probe
    reason: str | None = None  # why the last probe failed, if it did
    latency_ms: int | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    fence: int = 0  # the claim token of the probe that produced it; a lower token never overwrites it
    since: float | None = None  # when the status last changed (None: recorded before this was kept)
    changes: tuple[float, ...] = ()  # when the status changed within the flap window, oldest first
    held: str | None = None  # while flapping: the status alerts last announced, before it began
    paused_from: str | None = None  # while in a maintenance window: its status when the window began
    balance: float | None = None  # a provider check's last reading of the account's credit
    wait_s: float = 0.0  # how long the provider asked us to wait before the next check (it stays fresh that much longer)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in Redis."""
        return {
            "status": self.status.value,
            "checked_at": self.checked_at,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
            "fails": self.consecutive_failures,
            "oks": self.consecutive_successes,
            "fence": self.fence,
            "since": self.since,
            "chg": list(self.changes),
            "held": self.held,
            "paused": self.paused_from,
            "bal": self.balance,
            "wait": self.wait_s,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "State":
        """Build a state from its stored form."""
        return cls(
            status=Health(raw["status"]),
            checked_at=float(raw["checked_at"]),
            reason=raw.get("reason"),
            latency_ms=raw.get("latency_ms"),
            consecutive_failures=int(raw.get("fails", 0)),
            consecutive_successes=int(raw.get("oks", 0)),
            fence=int(raw.get("fence", 0)),
            since=raw.get("since"),
            changes=tuple(raw.get("chg", ())),
            held=raw.get("held"),
            paused_from=raw.get("paused"),
            balance=raw.get("bal"),
            wait_s=float(raw.get("wait") or 0.0),
        )
