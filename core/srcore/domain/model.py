"""Entities of the registry as plain dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class PollerState(enum.StrEnum):
    """Liveness state of a poller; transitions are in `states.POLLER_TRANSITIONS`."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    RECOVERING = "recovering"
    MAINTENANCE = "maintenance"
    DRAINING = "draining"
    INACTIVE = "inactive"


class AgentState(enum.StrEnum):
    """Liveness state of an agent as its poller reports it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"
    DISCONNECTED = "disconnected"
    UNAVAILABLE = "unavailable"


class CheckerState(enum.StrEnum):
    """State of a checker (a configured service check)."""

    ACTIVE = "active"
    PAUSED = "paused"
    FAILING = "failing"
    DISABLED = "disabled"


class ComponentStatus(enum.StrEnum):
    """Health a poller reports for itself, an agent or a check."""

    UNKNOWN = "unknown"
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent as announced by its poller at registration."""

    agent_id: str
    version: str = ""
    capabilities: tuple[str, ...] = ()
    address: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Registration:
    """What a poller announces in RegisterPoller, after validation."""

    tenant: str
    poller_id: str
    partition: str
    version: str = ""
    capabilities: tuple[str, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """An agent's health in one heartbeat."""

    agent_id: str
    status: ComponentStatus
    message: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One ReportHealth, after validation; `received_at` is the server clock."""

    tenant: str
    poller_id: str
    session_id: str
    status: ComponentStatus
    received_at: datetime
    agents: tuple[AgentHealth, ...] = ()
    applied_config_version: str = ""
    message: str = ""
    clock_skew_seconds: float = 0.0


@dataclass(slots=True)
class Agent:
    """An agent as stored."""

    agent_id: str
    state: AgentState
    version: str = ""
    capabilities: tuple[str, ...] = ()
    address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    message: str = ""
    last_seen: datetime | None = None


@dataclass(slots=True)
class Poller:
    """A poller as stored."""

    tenant: str
    poller_id: str
    partition: str
    state: PollerState
    version: str = ""
    capabilities: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    registered_at: datetime | None = None
    last_seen: datetime | None = None
    serving_replica: str = ""
    desired_config_version: str = ""
    applied_config_version: str = ""
    clock_skew_seconds: float = 0.0
    message: str = ""
    agent_count: int = 0
    agents: list[Agent] = field(default_factory=list)
    assigned_work: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change of one entity, recorded with the new state in one transaction.

    `entity_id` is the entity's path within the tenant, e.g. "demo" for a poller or
    "demo/a1" for an agent.
    """

    tenant: str
    entity_type: str
    entity_id: str
    from_state: str
    to_state: str
    reason: str
    at: datetime
