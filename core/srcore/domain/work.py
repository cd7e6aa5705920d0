"""What operators configure for pollers to run: service checks, sweep groups and integration
sources ("work items"), their validation, and their canonical form on the edge. No I/O.

Every item belongs to one tenant and one partition and needs one capability of the poller
that runs it (`capability`). Its edge entry (`edge_entry`) is the canonical serialisation the
poller receives, minus decrypted credentials; the item's `digest` hashes it, and a poller's
configuration version hashes the digests of its items (`domain.config.poller_config_version`).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from srcore.domain import validation
from srcore.domain.config import config_version
from srcore.domain.errors import InvalidArgument
from srcore.domain.tenancy import cidrs as validated_cidrs


class WorkKind(enum.StrEnum):
    """What an item is; the value names it in the store, events and edge entries."""

    CHECK = "check"
    SWEEP = "sweep"
    SOURCE = "source"


class CheckType(enum.StrEnum):
    """Kinds of service checks; the value is also the capability a poller needs to run one."""

    ICMP = "icmp"
    TCP = "tcp"
    HTTP = "http"
    GRPC = "grpc"
    SNMP = "snmp"
    PROCESS = "process"


class SourceKind(enum.StrEnum):
    """Kinds of integration sources; the value is also the capability a poller needs."""

    ARMIS = "armis"
    NETBOX = "netbox"
    GENERIC = "generic"


class AssignmentState(enum.StrEnum):
    """Where an item stands with dispatch (see docs/dispatch.md)."""

    UNASSIGNED = "unassigned"
    """Created or changed, not placed by the leader yet."""
    ASSIGNED = "assigned"
    PENDING = "pending"
    """No available poller of its partition can run it."""
    DISABLED = "disabled"


SWEEP_CAPABILITY = "sweep"

# Bounds, in seconds, of every cadence an operator sets; docs/dispatch.md lists them.
CHECK_INTERVAL = (1.0, 86_400.0)
CHECK_INTERVAL_DEFAULT = 60.0
CHECK_TIMEOUT_MAX = 300.0
CHECK_TIMEOUT_DEFAULT = 5.0
SWEEP_INTERVAL = (60.0, 7 * 86_400.0)
SWEEP_TIMEOUT = (0.01, 60.0)
SWEEP_TIMEOUT_DEFAULT = 1.0
SYNC_INTERVAL = (60.0, 7 * 86_400.0)
SYNC_INTERVAL_DEFAULT = 3600.0
MAX_SETTINGS = 64
MAX_SETTING_VALUE = 1024
MAX_PORTS = 1024
MAX_CREDENTIALS = 16
MAX_CREDENTIAL_VALUE = 4096
# Largest networks one sweep group may cover: a /8 is 16.7 million IPv4 hosts, and an IPv6
# range larger than a /112 (65,536 addresses) cannot be swept host by host at all.
MIN_PREFIX = {4: 8, 6: 112}
SNMP_PORT = 161

_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SETTING_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A process name as `pgrep -x` or a service manager knows it: no path separators, no spaces
# at the ends.
_PROCESS = re.compile(r"^[^\s/\x00-\x1f][^/\x00-\x1f]{0,254}$")

# Check types that need a port, and those that take none.
_PORT_REQUIRED = frozenset({CheckType.TCP, CheckType.GRPC})
_NO_PORT = frozenset({CheckType.ICMP, CheckType.PROCESS})


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """What a service check does. Times are seconds."""

    check_type: CheckType
    target: str
    port: int
    interval: float
    timeout: float
    agent_id: str = ""
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """What a sweep group covers and how often. A zero interval disables that sweep."""

    cidrs: tuple[str, ...]
    ports: tuple[int, ...]
    icmp_interval: float
    tcp_interval: float
    timeout: float


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where an integration source is and how often it is pulled.

    `credential_names` are the names of the sealed credentials, never their values.
    """

    source_kind: SourceKind
    endpoint: str
    sync_interval: float
    settings: dict[str, str] = field(default_factory=dict)
    credential_names: tuple[str, ...] = ()


Spec = CheckSpec | SweepSpec | SourceSpec


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where an item runs, and why."""

    state: AssignmentState
    poller_id: str = ""
    reason: str = ""
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A configured item as stored (credentials stay sealed in the store)."""

    tenant: str
    kind: WorkKind
    name: str
    item_id: str
    partition: str
    enabled: bool
    spec: Spec
    assignment: Assignment
    revision: int = 1
    credentials_version: int = 0
    credentials_updated_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def capability(self) -> str:
        """The capability a poller needs to run this item."""
        return capability(self.spec)

    @property
    def agent_id(self) -> str:
        """The agent the item is pinned to ("" when none)."""
        return pinned_agent(self.spec)


def pinned_agent(spec: Spec) -> str:
    """The agent an item with `spec` must run on ("" when any will do)."""
    return spec.agent_id if isinstance(spec, CheckSpec) else ""


def capability(spec: Spec) -> str:
    """The capability a poller (or one of its agents) needs to run an item with `spec`."""
    if isinstance(spec, CheckSpec):
        return spec.check_type.value
    if isinstance(spec, SweepSpec):
        return SWEEP_CAPABILITY
    return spec.source_kind.value


# validation


def _seconds(field_name: str, value: float | None, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    if not low <= value <= high:
        raise InvalidArgument(field_name, f"must be between {_human(low)} and {_human(high)}")
    return value


def _human(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    for unit, size in (("days", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def host(field_name: str, value: str) -> str:
    """A host name (RFC 1123) or an IP address."""
    if not value:
        raise InvalidArgument(field_name, "required: a host name or IP address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidArgument(field_name, f"not a host name or IP address: {value[:80]!r}")
    return value.lower()


def http_url(field_name: str, value: str) -> str:
    """An http or https URL with a host; returned as given.

    Errors never echo the URL (a webhook's carries its secret in the path); at most its host.
    """
    if not value:
        raise InvalidArgument(field_name, "required: an http(s) URL")
    validation.text(field_name, value, 2048)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field_name, "not a URL (bad port or IPv6 address)") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field_name, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidArgument(field_name, "URL has no host")
    host(field_name, parts.hostname)
    if port == 0:
        raise InvalidArgument(field_name, "URL port must be 1-65535")
    return value


def port(field_name: str, value: int) -> int:
    """A TCP/UDP port, 1-65535."""
    if not 1 <= value <= 65_535:
        raise InvalidArgument(field_name, "must be between 1 and 65535")
    return value


def settings(field_name: str, values: Mapping[str, str]) -> dict[str, str]:
    """Type-specific settings: at most 64, keys like label keys, values up to 1024 characters."""
    if len(values) > MAX_SETTINGS:
        raise InvalidArgument(field_name, f"more than {MAX_SETTINGS} entries")
    for key, value in values.items():
        if not _SETTING_KEY.fullmatch(key):
            raise InvalidArgument(
                f"{field_name}[{key[:70]!r}]", "key must be 1-63 characters of [A-Za-z0-9._/-]"
            )
        validation.text(f"{field_name}[{key!r}]", value, MAX_SETTING_VALUE)
    return dict(sorted(values.items()))


def credentials(field_name: str, values: Mapping[str, str]) -> dict[str, str]:
    """Credentials: at most 16, names 1-63 characters, values up to 4096 characters.

    Errors name the credential, never its value.
    """
    if len(values) > MAX_CREDENTIALS:
        raise InvalidArgument(field_name, f"more than {MAX_CREDENTIALS} entries")
    for name, value in values.items():
        if not _CREDENTIAL_NAME.fullmatch(name):
            raise InvalidArgument(
                f"{field_name}[{name[:70]!r}]", "name must be 1-63 characters of [A-Za-z0-9._-]"
            )
        if not value:
            raise InvalidArgument(f"{field_name}[{name!r}]", "empty value")
        if len(value) > MAX_CREDENTIAL_VALUE:
            raise InvalidArgument(f"{field_name}[{name!r}]", f"longer than {MAX_CREDENTIAL_VALUE} characters")
    return dict(sorted(values.items()))


def check_spec(
    prefix: str,
    check_type: CheckType | None,
    target: str,
    port_number: int,
    interval: float | None,
    timeout: float | None,
    agent_id: str,
    values: Mapping[str, str],
) -> CheckSpec:
    """A validated check spec; errors name `<prefix>.<field>`."""
    if check_type is None:
        raise InvalidArgument(f"{prefix}.check_type", "required: icmp, tcp, http, grpc, snmp or process")
    target_field, port_field = f"{prefix}.target", f"{prefix}.port"
    if check_type is CheckType.HTTP:
        target = http_url(target_field, target)
    elif check_type is CheckType.PROCESS:
        if not _PROCESS.fullmatch(target):
            raise InvalidArgument(target_field, "must be a process name: 1-255 characters, no '/'")
    else:
        target = host(target_field, target)
    if check_type in _PORT_REQUIRED:
        port(port_field, port_number)
    elif check_type in _NO_PORT:
        if port_number:
            raise InvalidArgument(port_field, f"{check_type.value} checks take no port")
    elif check_type is CheckType.SNMP:
        port_number = port(port_field, port_number or SNMP_PORT)
    elif port_number:
        port(port_field, port_number)
    every = _seconds(f"{prefix}.interval", interval, CHECK_INTERVAL_DEFAULT, *CHECK_INTERVAL)
    limit = min(every, CHECK_TIMEOUT_MAX)
    if timeout is None:
        timeout = min(CHECK_TIMEOUT_DEFAULT, every)
    elif not 0 < timeout <= limit:
        raise InvalidArgument(
            f"{prefix}.timeout",
            f"must be more than 0 and at most {_human(limit)} (the interval, at most 300 s)",
        )
    return CheckSpec(
        check_type=check_type,
        target=target,
        port=port_number,
        interval=every,
        timeout=timeout,
        agent_id=validation.identifier(f"{prefix}.agent_id", agent_id) if agent_id else "",
        settings=settings(f"{prefix}.settings", values),
    )


def sweep_spec(
    prefix: str,
    networks: list[str],
    ports: list[int],
    icmp_interval: float,
    tcp_interval: float,
    timeout: float | None,
) -> SweepSpec:
    """A validated sweep spec; errors name `<prefix>.<field>`."""
    if not networks:
        raise InvalidArgument(f"{prefix}.cidrs", "required: at least one network")
    canonical = validated_cidrs(f"{prefix}.cidrs", networks)
    for i, text in enumerate(networks):
        network = ipaddress.ip_network(text.strip())
        if network.prefixlen < MIN_PREFIX[network.version]:
            raise InvalidArgument(
                f"{prefix}.cidrs[{i}]",
                f"/{network.prefixlen} is too large to sweep: at most /{MIN_PREFIX[network.version]}",
            )
    if len(ports) > MAX_PORTS:
        raise InvalidArgument(f"{prefix}.ports", f"more than {MAX_PORTS} ports")
    for i, number in enumerate(ports):
        port(f"{prefix}.ports[{i}]", number)
    if len(set(ports)) != len(ports):
        raise InvalidArgument(f"{prefix}.ports", "duplicate ports")
    for name, value in (("icmp_interval", icmp_interval), ("tcp_interval", tcp_interval)):
        if value:
            _seconds(f"{prefix}.{name}", value, 0.0, *SWEEP_INTERVAL)
    if not icmp_interval and not tcp_interval:
        raise InvalidArgument(f"{prefix}.icmp_interval", "set icmp_interval, tcp_interval or both")
    if tcp_interval and not ports:
        raise InvalidArgument(f"{prefix}.ports", "a TCP sweep needs at least one port")
    return SweepSpec(
        cidrs=canonical,
        ports=tuple(sorted(ports)),
        icmp_interval=icmp_interval,
        tcp_interval=tcp_interval,
        timeout=_seconds(f"{prefix}.timeout", timeout, SWEEP_TIMEOUT_DEFAULT, *SWEEP_TIMEOUT),
    )


def source_spec(
    prefix: str,
    kind: SourceKind | None,
    endpoint: str,
    sync_interval: float | None,
    values: Mapping[str, str],
    credential_names: tuple[str, ...],
) -> SourceSpec:
    """A validated source spec; errors name `<prefix>.<field>`."""
    if kind is None:
        raise InvalidArgument(f"{prefix}.kind", "required: armis, netbox or generic")
    return SourceSpec(
        source_kind=kind,
        endpoint=http_url(f"{prefix}.endpoint", endpoint),
        sync_interval=_seconds(
            f"{prefix}.sync_interval", sync_interval, SYNC_INTERVAL_DEFAULT, *SYNC_INTERVAL
        ),
        settings=settings(f"{prefix}.settings", values),
        credential_names=credential_names,
    )


# canonical forms


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def spec_document(spec: Spec) -> dict[str, Any]:
    """The spec as the JSON the store keeps (times in milliseconds)."""
    if isinstance(spec, CheckSpec):
        return {
            "check_type": spec.check_type.value,
            "target": spec.target,
            "port": spec.port,
            "interval_ms": _ms(spec.interval),
            "timeout_ms": _ms(spec.timeout),
            "agent_id": spec.agent_id,
            "settings": spec.settings,
        }
    if isinstance(spec, SweepSpec):
        return {
            "cidrs": list(spec.cidrs),
            "ports": list(spec.ports),
            "icmp_interval_ms": _ms(spec.icmp_interval),
            "tcp_interval_ms": _ms(spec.tcp_interval),
            "timeout_ms": _ms(spec.timeout),
        }
    return {
        "source_kind": spec.source_kind.value,
        "endpoint": spec.endpoint,
        "sync_interval_ms": _ms(spec.sync_interval),
        "settings": spec.settings,
        "credential_names": list(spec.credential_names),
    }


def spec_from_document(kind: WorkKind, data: Mapping[str, Any]) -> Spec:
    """Inverse of `spec_document`."""
    if kind is WorkKind.CHECK:
        return CheckSpec(
            check_type=CheckType(data["check_type"]),
            target=str(data["target"]),
            port=int(data["port"]),
            interval=data["interval_ms"] / 1000,
            timeout=data["timeout_ms"] / 1000,
            agent_id=str(data.get("agent_id", "")),
            settings=dict(data.get("settings", {})),
        )
    if kind is WorkKind.SWEEP:
        return SweepSpec(
            cidrs=tuple(data["cidrs"]),
            ports=tuple(int(p) for p in data["ports"]),
            icmp_interval=data["icmp_interval_ms"] / 1000,
            tcp_interval=data["tcp_interval_ms"] / 1000,
            timeout=data["timeout_ms"] / 1000,
        )
    return SourceSpec(
        source_kind=SourceKind(data["source_kind"]),
        endpoint=str(data["endpoint"]),
        sync_interval=data["sync_interval_ms"] / 1000,
        settings=dict(data.get("settings", {})),
        credential_names=tuple(data.get("credential_names", ())),
    )


def edge_entry(
    kind: WorkKind, item_id: str, name: str, spec: Spec, credentials_version: int
) -> dict[str, Any]:
    """The canonical form of what the edge receives for one item.

    Decrypted credentials are not part of it (a hash of them would be shown to operators as
    part of the version); `credentials_version`, bumped whenever they are written, stands in
    for them, so new credentials still make a new version.
    """
    entry: dict[str, Any] = {"kind": kind.value, "id": item_id, "name": name, **spec_document(spec)}
    if isinstance(spec, SourceSpec):
        del entry["credential_names"]
        entry["credentials_version"] = credentials_version
    return entry


def item_digest(kind: WorkKind, item_id: str, name: str, spec: Spec, credentials_version: int) -> str:
    """Content hash of an item's edge entry."""
    return config_version(edge_entry(kind, item_id, name, spec, credentials_version))


def credentials_associated_data(tenant: str, item_id: str) -> bytes:
    """What sealed credentials are bound to, so a value copied to another row does not open."""
    return f"source-credentials:{tenant}:{item_id}".encode()
