"""Device identity: which canonical device each observation (sweep host, device update) is.

Rules (docs/identity.md):
- Strong identifiers name a device anywhere in its tenant: external ids (`external:<system>`,
  e.g. an Armis or NetBox id) first, then universally administered MAC addresses.
- Weak identifiers only hold within a partition, because IP space overlaps between partitions:
  the IP address, and locally administered (random) MACs. Random MACs are recorded so operators
  can look them up, but they never resolve an observation, so they never merge two devices.
  All-zero, broadcast and multicast MACs are ignored.
- A new device's id is a hash of its tenant and its strongest identifier, so every replica
  that creates it picks the same id.
- When one observation's strong identifiers point to two or more devices, they merge: the
  survivor is the oldest (first seen), then the smallest id. A device known only by weak
  identifiers is folded into the device a strong identifier names when both are seen together.

The values reaching `IdentityResolver` are already canonical (the ingest pipeline stores IPs in
canonical text and MACs lower case with colons), so the hot path compares strings only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from srcore.domain.errors import InvalidArgument

EXTERNAL = "external"
MAC = "mac"
IP = "ip"
RANDOM_MAC = "random-mac"
STRONG_KINDS = (EXTERNAL, MAC)
# The source of sweep host results (integrations name their own).
SWEEP_SOURCE = "sweep"
WEAK_KINDS = (IP, RANDOM_MAC)

_MAC_TEXT = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}")
_HEX = "0123456789abcdef"
_IGNORED_MACS = frozenset({"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"})
_SYSTEM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
MAX_EXTERNAL_ID = 128

# An identifier as stored: (kind, value, partition). Partition is "" for strong identifiers.
IdentifierKey = tuple[str, str, str]


def normalize_mac(value: str) -> str:
    """A MAC in canonical form (lower case, colon separated); INVALID_ARGUMENT otherwise."""
    text = value.strip().lower()
    if not _MAC_TEXT.fullmatch(text):
        raise InvalidArgument("mac", f"{value[:64]!r} is not a MAC address")
    digits = text.replace(":", "").replace("-", "")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalize_ip(value: str) -> str:
    """An IP address in canonical text form; INVALID_ARGUMENT otherwise (not on the hot path)."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise InvalidArgument("ip", f"{value[:64]!r} is not an IP address") from None


def normalize_system(value: str) -> str:
    """An external system name (armis, netbox, ...): lower case, a short slug."""
    text = value.strip().lower()
    if not _SYSTEM.fullmatch(text):
        raise InvalidArgument("external_id", f"system {value[:40]!r} must be a short lower-case name")
    return text


def external_value(system: str, external_id: str) -> str:
    """How an external id is stored: `<system>:<id>`, the system lower case."""
    return f"{system.lower()}:{external_id}"


def mac_class(mac: str) -> str:
    """MAC if universally administered, RANDOM_MAC if locally administered, "" if ignored.

    `mac` is canonical. The second-least-significant bit of the first octet marks a locally
    administered address, the least-significant one a multicast address.
    """
    if not mac or mac in _IGNORED_MACS:
        return ""
    first = _HEX.index(mac[1])
    if first & 1:
        return ""
    return RANDOM_MAC if first & 2 else MAC


def mac_after(current: str, observed: str) -> str:
    """The MAC a device keeps after an observation reporting `observed` (both canonical).

    A universal MAC is taken; a random one only while the device has no universal MAC (it
    never displaces the one the device is known by); an ignored or missing one changes nothing.
    """
    kind = mac_class(observed)
    if kind == MAC or (kind == RANDOM_MAC and mac_class(current) != MAC):
        return observed
    return current


def canonical_id(tenant: str, key: IdentifierKey) -> str:
    """The id of a device created from identifier `key`: the same on every replica."""
    kind, value, partition = key
    digest = hashlib.sha256(f"{tenant}\0{kind}\0{partition}\0{value}".encode()).hexdigest()
    return digest[:32]


@dataclass(slots=True)
class Observation:
    """One sweep host result or device update, with canonical values."""

    tenant: str
    partition: str
    ip: str
    mac: str
    hostname: str
    available: bool
    observed_at: datetime
    source: str
    external_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Device:
    """A canonical device as resolution needs it, and as it is written back."""

    tenant: str
    device_id: str
    partition: str
    ip: str
    mac: str
    hostname: str
    available: bool
    first_seen: datetime
    last_seen: datetime
    merged_into: str | None = None
    external_ids: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def strong(self) -> dict[str, str]:
        """The device's strong identifiers by kind: "mac" and "external:<system>"."""
        found = {
            f"{EXTERNAL}:{system}": external_value(system, value)
            for system, value in self.external_ids.items()
        }
        if self.mac and mac_class(self.mac) == MAC:
            found[MAC] = self.mac
        return found


@dataclass(frozen=True, slots=True)
class Merge:
    """Device `merged_id` merged into `survivor_id`, with the evidence that linked them."""

    tenant: str
    survivor_id: str
    merged_id: str
    evidence: tuple[IdentifierKey, ...]
    source: str
    partition: str
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class Link:
    """Identifier `key` of `tenant` now names `device_id`."""

    tenant: str
    key: IdentifierKey
    device_id: str


@dataclass(slots=True)
class Resolution:
    """What resolving a batch changed: devices to upsert, new or moved links, merges.

    `seen` holds devices whose only change is a later last_seen: their rows are otherwise what
    the store holds, so that one column is all that is written (a repeat sweep's usual write).
    """

    devices: dict[tuple[str, str], Device] = field(default_factory=dict)
    seen: dict[tuple[str, str], Device] = field(default_factory=dict)
    links: dict[tuple[str, IdentifierKey], str] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    # Devices made by `create_unseen`: neither they nor their identifiers were in the store.
    unseen: set[tuple[str, str]] = field(default_factory=set)


def identifiers(obs: Observation) -> tuple[list[IdentifierKey], list[IdentifierKey], list[IdentifierKey]]:
    """An observation's strong, resolving-weak and record-only identifiers, strongest first."""
    strong: list[IdentifierKey] = []
    weak: list[IdentifierKey] = []
    recorded: list[IdentifierKey] = []
    if obs.external_ids:
        for system in sorted(obs.external_ids):
            value = obs.external_ids[system]
            if value:
                strong.append((EXTERNAL, external_value(system, value), ""))
    mac = obs.mac
    if mac:
        kind = mac_class(mac)
        if kind == MAC:
            strong.append((MAC, mac, ""))
        elif kind == RANDOM_MAC:
            recorded.append((RANDOM_MAC, mac, obs.partition))
    if obs.ip:
        weak.append((IP, obs.ip, obs.partition))
    return strong, weak, recorded


def sweep_identifiers(partition: str, ip: str, mac: str) -> tuple[IdentifierKey, ...]:
    """A sweep result's identifiers, strongest first: what `identifiers` gives, flattened."""
    kind = mac_class(mac)
    if kind == MAC:
        return ((MAC, mac, ""), (IP, ip, partition)) if ip else ((MAC, mac, ""),)
    keys: tuple[IdentifierKey, ...] = ((IP, ip, partition),) if ip else ()
    return (*keys, (RANDOM_MAC, mac, partition)) if kind else keys


class IdentityView:
    """Known links and devices of the tenants in a batch (a read-through of store and cache).

    `links` maps (tenant, identifier) to a device id, `devices` (tenant, device id) to the device.
    The resolver updates both as it goes, so later observations of a batch see earlier ones.
    """

    def __init__(
        self,
        links: dict[tuple[str, IdentifierKey], str],
        devices: dict[tuple[str, str], Device],
    ) -> None:
        self.links = links
        self.devices = devices

    def live(self, tenant: str, device_id: str) -> Device | None:
        """The device `device_id` resolves to, following merges (chains are kept flat)."""
        device = self.devices.get((tenant, device_id))
        hops = 0
        while device is not None and device.merged_into and hops < 8:
            device = self.devices.get((tenant, device.merged_into))
            hops += 1
        return device

    def find(self, tenant: str, key: IdentifierKey) -> Device | None:
        """The live device an identifier names, if any."""
        device_id = self.links.get((tenant, key))
        return self.live(tenant, device_id) if device_id is not None else None


def survivor_of(devices: Iterable[Device]) -> Device:
    """Which of merging devices survives: the first seen, then the smallest id."""
    return min(devices, key=lambda d: (d.first_seen, d.device_id))


def _compatible(device: Device, strong: list[IdentifierKey]) -> bool:
    """Whether `device` carries no strong identifier that contradicts the observation's."""
    have = device.strong()
    if not have:
        return True
    for kind, value, _ in strong:
        name = MAC if kind == MAC else f"{EXTERNAL}:{value.partition(':')[0]}"
        current = have.get(name)
        if current is not None and current != value:
            return False
    return True


class IdentityResolver:
    """Resolves observations against an IdentityView, collecting what changed."""

    def __init__(self, view: IdentityView) -> None:
        self.view = view
        self.result = Resolution()

    def resolve_all(self, observations: Iterable[Observation]) -> Resolution:
        """Resolve every observation in order; later ones see what earlier ones created."""
        for obs in observations:
            self.resolve(obs)
        return self.result

    def resolve(self, obs: Observation) -> Device:
        """The canonical device of one observation, updating links, devices and merges."""
        view = self.view
        tenant = obs.tenant
        strong, weak, recorded = identifiers(obs)
        matched: dict[str, Device] = {}
        for key in strong:
            found = view.find(tenant, key)
            if found is not None:
                matched.setdefault(found.device_id, found)
        device: Device | None = None
        if len(matched) > 1:
            device = self._merge(obs, list(matched.values()), strong)
        elif matched:
            device = next(iter(matched.values()))
        for key in weak:
            other = view.find(tenant, key)
            if other is None or (device is not None and other.device_id == device.device_id):
                continue
            if device is None:
                if _compatible(other, strong):
                    device = other
            elif not other.strong():
                # Known only by weak identifiers, now seen beside a strong one: the same device.
                device = self._merge(obs, [device, other], [*strong, key], survivor=device)
        if device is None:
            device = self._create(obs, (strong or weak or recorded)[0])
        self.observe(device, obs)
        for key in (*strong, *weak, *recorded):
            if view.links.get((tenant, key)) != device.device_id:
                view.links[(tenant, key)] = device.device_id
                self.result.links[(tenant, key)] = device.device_id
        return device

    def create_unseen(
        self,
        tenant: str,
        partition: str,
        ip: str,
        mac: str,
        hostname: str,
        available: bool,
        observed_at: datetime,
        keys: tuple[IdentifierKey, ...],
    ) -> bool:
        """Resolve a sweep result none of whose identifiers `keys` (`sweep_identifiers`) names a device.

        The caller makes sure no other observation of the batch carries any of them, so the
        result is what `resolve` would make in any order: a new device named by all of them.
        Returns False, doing nothing, when the new device's id is already in the view (then
        `resolve` must decide).
        """
        if not keys:
            return False
        view = self.view
        device_id = canonical_id(tenant, keys[0])
        device_key = (tenant, device_id)
        if device_key in view.devices:
            return False
        device = Device(tenant, device_id, partition, ip, mac, hostname, available, observed_at, observed_at,
                        None, {}, [SWEEP_SOURCE])  # fmt: skip
        view.devices[device_key] = device
        result = self.result
        result.devices[device_key] = device
        result.unseen.add(device_key)
        for key in keys:
            view.links[(tenant, key)] = device_id
            result.links[(tenant, key)] = device_id
        return True

    def _create(self, obs: Observation, key: IdentifierKey) -> Device:
        device_id = canonical_id(obs.tenant, key)
        existing = self.view.live(obs.tenant, device_id)
        if existing is not None:
            # The identity that created this id once was merged since: it lives on in the survivor.
            return existing
        device = Device(
            tenant=obs.tenant,
            device_id=device_id,
            partition=obs.partition,
            ip=obs.ip,
            mac=obs.mac,
            hostname=obs.hostname,
            available=obs.available,
            first_seen=obs.observed_at,
            last_seen=obs.observed_at,
        )
        self.view.devices[(obs.tenant, device_id)] = device
        return device

    def _merge(
        self,
        obs: Observation,
        devices: list[Device],
        evidence: list[IdentifierKey],
        survivor: Device | None = None,
    ) -> Device:
        keep = survivor or survivor_of(devices)
        tenant = obs.tenant
        for gone in devices:
            if gone.device_id == keep.device_id:
                continue
            # The store repoints whatever had merged into `gone`; `live` follows chains meanwhile.
            gone.merged_into = keep.device_id
            for system, value in gone.external_ids.items():
                keep.external_ids.setdefault(system, value)
            keep.sources = sorted({*keep.sources, *gone.sources})
            keep.first_seen = min(keep.first_seen, gone.first_seen)
            if not keep.mac and gone.mac:
                keep.mac = gone.mac
            self._touch(gone)
            self.result.merges.append(
                Merge(
                    tenant=tenant,
                    survivor_id=keep.device_id,
                    merged_id=gone.device_id,
                    evidence=tuple(evidence),
                    source=obs.source,
                    partition=obs.partition,
                    observed_at=obs.observed_at,
                )
            )
        self._touch(keep)
        return keep

    def _touch(self, device: Device) -> None:
        self.result.devices[(device.tenant, device.device_id)] = device

    def observe(self, device: Device, obs: Observation) -> None:
        """Fold the observation's attributes into `device`; the latest observation wins.

        `resolve` calls it; call it directly only for an observation whose every identifier
        already names `device` (then the rules change no link and make no merge).
        """
        if obs.observed_at >= device.last_seen:
            device.last_seen = obs.observed_at
            device.partition = obs.partition
            device.available = obs.available
            if obs.ip:
                device.ip = obs.ip
            device.mac = mac_after(device.mac, obs.mac)
            if obs.hostname:
                device.hostname = obs.hostname
        elif obs.observed_at < device.first_seen:
            device.first_seen = obs.observed_at
        for system, value in obs.external_ids.items():
            if value:
                device.external_ids[system.lower()] = value
        if obs.source and obs.source not in device.sources:
            device.sources = sorted({*device.sources, obs.source})
        self._touch(device)


# A device as stored, minus last_seen: what makes a rewrite necessary.
DeviceState = tuple[object, ...]


def device_state(device: Device) -> DeviceState:
    """Everything stored about a device except `last_seen`, to tell whether it changed."""
    return (
        device.partition, device.ip, device.mac, device.hostname, device.available, device.first_seen,
        device.merged_into, tuple(sorted(device.external_ids.items())), tuple(device.sources),
    )  # fmt: skip


class Write(Enum):
    """What a resolved device needs written back."""

    NOTHING = "nothing"
    LAST_SEEN = "last_seen"
    DEVICE = "device"

    def __bool__(self) -> bool:
        return self is not Write.NOTHING


def needs_write(device: Device, stored: tuple[DeviceState, datetime] | None, resolution: timedelta) -> Write:
    """What of a resolved device must be written back, given its stored state and last_seen.

    New devices and changed ones are written; a device whose only change is `last_seen` is
    written once that moved by `resolution` or more, so a repeat sweep does not rewrite every
    device it sees (writes are what a store pays for most), and then only that column.
    """
    if stored is None:
        return Write.DEVICE
    state, last_seen = stored
    if device_state(device) != state:
        return Write.DEVICE
    return Write.LAST_SEEN if device.last_seen - last_seen >= resolution else Write.NOTHING


def fold_known_sweep(
    device: Device,
    partition: str,
    ip: str,
    mac: str,
    hostname: str,
    available: bool,
    observed_at: datetime,
    resolution: timedelta,
) -> Write:
    """Fold a sweep result whose every identifier names live `device`; returns what to write.

    What `IdentityResolver.observe` then `needs_write` decide for such a result, without
    building an Observation or comparing whole device states: attributes and last_seen move
    only when an attribute changed or last_seen moved by `resolution` or more (otherwise the
    device is left exactly as stored). The caller makes sure `observed_at >= device.first_seen`.
    """
    write = Write.NOTHING
    if SWEEP_SOURCE not in device.sources:
        device.sources = sorted({*device.sources, SWEEP_SOURCE})
        write = Write.DEVICE
    if observed_at < device.last_seen:
        return write
    # mac_after keeps an unchanged MAC whatever its class; repeat sweeps take this branch.
    new_mac = mac if mac == device.mac else mac_after(device.mac, mac)
    new_ip = ip or device.ip
    new_hostname = hostname or device.hostname
    if (
        write
        or partition != device.partition
        or available != device.available
        or new_ip != device.ip
        or new_mac != device.mac
        or new_hostname != device.hostname
    ):
        device.partition = partition
        device.available = available
        device.ip = new_ip
        device.mac = new_mac
        device.hostname = new_hostname
        device.last_seen = observed_at
        return Write.DEVICE
    if observed_at - device.last_seen >= resolution:
        device.last_seen = observed_at
        return Write.LAST_SEEN
    return Write.NOTHING


def evidence_text(evidence: Iterable[IdentifierKey]) -> str:
    """Evidence as people read it: `mac 00:11:22:33:44:55, ip 10.0.0.1@dc1`."""
    return ", ".join(f"{kind} {value}@{partition}" if partition else f"{kind} {value}"
                     for kind, value, partition in evidence)  # fmt: skip
