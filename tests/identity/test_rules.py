"""Identity rules, pure: which canonical device each observation is, and when devices merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from srcore.domain.errors import InvalidArgument
from srcore.domain.identity import (
    MAC,
    RANDOM_MAC,
    Device,
    IdentityResolver,
    IdentityView,
    Observation,
    Write,
    canonical_id,
    device_state,
    fold_known_sweep,
    identifiers,
    mac_class,
    needs_write,
    normalize_ip,
    normalize_mac,
    sweep_identifiers,
)
from srcore.ingest.identity import TtlCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UNIVERSAL = "00:1a:2b:3c:4d:5e"
OTHER_UNIVERSAL = "00:1a:2b:3c:4d:5f"
RANDOM = "02:1a:2b:3c:4d:5e"


def obs(
    n: int = 0,
    *,
    ip: str = "",
    mac: str = "",
    partition: str = "dc1",
    tenant: str = "acme",
    external: dict[str, str] | None = None,
    source: str = "sweep",
) -> Observation:
    """An observation made `n` minutes after T0."""
    return Observation(
        tenant, partition, ip, mac, f"host-{n}", True, T0 + timedelta(minutes=n), source, external or {}
    )


class World:
    """Links and devices that persist across resolver rounds, as the store would."""

    def __init__(self) -> None:
        self.view = IdentityView({}, {})
        self.merges: list[tuple[str, str]] = []

    def resolve(self, *observations: Observation) -> list[Device]:
        resolver = IdentityResolver(self.view)
        devices = [resolver.resolve(o) for o in observations]
        self.merges += [(m.merged_id, m.survivor_id) for m in resolver.result.merges]
        return devices

    def live(self) -> list[Device]:
        return [d for d in self.view.devices.values() if d.merged_into is None]


def test_mac_beats_ip() -> None:
    world = World()
    first, second = world.resolve(obs(0, ip="10.0.0.5", mac=UNIVERSAL), obs(1, ip="10.0.0.9", mac=UNIVERSAL))
    # The host moved address: the MAC keeps it one device, now at the new IP.
    assert first.device_id == second.device_id
    assert len(world.live()) == 1
    assert world.live()[0].ip == "10.0.0.9"
    # The old IP now seen with a different MAC is another device, not the first one.
    (third,) = world.resolve(obs(2, ip="10.0.0.5", mac=OTHER_UNIVERSAL))
    assert third.device_id != first.device_id


def test_an_ip_only_device_is_folded_into_the_mac_device() -> None:
    world = World()
    (anonymous,) = world.resolve(obs(0, ip="10.0.0.5"))
    (known,) = world.resolve(obs(1, ip="10.0.0.5", mac=UNIVERSAL))
    # A new strong identifier on an IP-only device: the device gains it, no second device.
    assert known.device_id == anonymous.device_id
    assert len(world.live()) == 1


def test_external_id_beats_mac() -> None:
    world = World()
    a, b = world.resolve(
        obs(0, mac=UNIVERSAL, external={"armis": "A-1"}, source="armis"),
        # The NIC was swapped: a new MAC, the same Armis device.
        obs(1, mac=OTHER_UNIVERSAL, external={"armis": "A-1"}, source="armis"),
    )
    assert a.device_id == b.device_id
    assert a.device_id == canonical_id("acme", ("external", "armis:A-1", ""))
    assert len(world.live()) == 1


def test_same_ip_in_two_partitions_is_two_devices() -> None:
    world = World()
    a, b = world.resolve(obs(0, ip="10.0.0.5", partition="dc1"), obs(0, ip="10.0.0.5", partition="dc2"))
    assert a.device_id != b.device_id
    assert {d.partition for d in world.live()} == {"dc1", "dc2"}


def test_a_late_strong_identifier_merges_two_devices() -> None:
    world = World()
    by_mac, by_armis = world.resolve(
        obs(0, ip="10.0.0.5", mac=UNIVERSAL),
        obs(5, ip="192.168.9.9", external={"armis": "A-7"}, source="armis", partition="dc2"),
    )
    assert by_mac.device_id != by_armis.device_id
    # Armis now reports that its device carries the MAC the sweep saw: one device.
    (merged,) = world.resolve(obs(9, mac=UNIVERSAL, external={"armis": "A-7"}, source="armis"))
    survivor, gone = by_mac, by_armis  # the first seen survives
    assert merged.device_id == survivor.device_id
    assert world.merges == [(gone.device_id, survivor.device_id)]
    assert gone.merged_into == survivor.device_id
    assert merged.external_ids == {"armis": "A-7"}
    assert merged.sources == ["armis", "sweep"]
    assert [d.device_id for d in world.live()] == [survivor.device_id]
    # Every identifier of either device now resolves to the survivor.
    (again,) = world.resolve(obs(10, ip="192.168.9.9", partition="dc2"))
    assert again.device_id == survivor.device_id


def test_merge_records_its_evidence_and_source() -> None:
    view = IdentityView({}, {})
    IdentityResolver(view).resolve_all(
        [obs(0, mac=UNIVERSAL), obs(1, external={"netbox": "77"}, ip="10.1.1.1")]
    )
    resolver = IdentityResolver(view)
    resolver.resolve(obs(2, mac=UNIVERSAL, external={"netbox": "77"}, source="netbox"))
    (merge,) = resolver.result.merges
    assert merge.source == "netbox"
    assert set(merge.evidence) == {("external", "netbox:77", ""), ("mac", UNIVERSAL, "")}


def test_random_macs_do_not_merge() -> None:
    world = World()
    a, b = world.resolve(obs(0, ip="10.0.0.5", mac=RANDOM), obs(1, ip="10.0.0.6", mac=RANDOM))
    assert a.device_id != b.device_id
    assert world.merges == []
    assert len(world.live()) == 2


def test_a_random_mac_never_displaces_the_universal_one() -> None:
    world = World()
    world.resolve(obs(0, ip="10.0.0.5", mac=UNIVERSAL))
    (same,) = world.resolve(obs(1, ip="10.0.0.5", mac=RANDOM))
    assert same.mac == UNIVERSAL


def test_broadcast_and_zero_macs_are_ignored() -> None:
    world = World()
    a, b = world.resolve(
        obs(0, ip="10.0.0.5", mac="ff:ff:ff:ff:ff:ff"), obs(1, ip="10.0.0.6", mac="ff:ff:ff:ff:ff:ff")
    )
    c, d = world.resolve(
        obs(0, ip="10.0.0.7", mac="00:00:00:00:00:00"), obs(1, ip="10.0.0.8", mac="00:00:00:00:00:00")
    )
    assert len({a.device_id, b.device_id, c.device_id, d.device_id}) == 4
    assert (mac_class("ff:ff:ff:ff:ff:ff"), mac_class("00:00:00:00:00:00")) == ("", "")
    assert (mac_class(UNIVERSAL), mac_class(RANDOM)) == (MAC, RANDOM_MAC)


def test_canonical_ids_are_deterministic() -> None:
    batch = [
        obs(0, ip="10.0.0.5", mac=UNIVERSAL),
        obs(1, ip="10.0.0.6"),
        obs(2, external={"armis": "9"}, source="armis"),
    ]
    first = [d.device_id for d in World().resolve(*batch)]
    second = [d.device_id for d in World().resolve(*batch)]
    assert first == second
    assert first[0] == canonical_id("acme", ("mac", UNIVERSAL, ""))
    assert first[1] == canonical_id("acme", ("ip", "10.0.0.6", "dc1"))
    # Tenants never share ids, even for the same MAC.
    (other,) = World().resolve(obs(0, ip="10.0.0.5", mac=UNIVERSAL, tenant="globex"))
    assert other.device_id != first[0]


def test_merge_survivor_does_not_depend_on_observation_order() -> None:
    a = obs(0, mac=UNIVERSAL)
    b = obs(1, external={"armis": "5"}, source="armis")
    link = obs(2, mac=UNIVERSAL, external={"armis": "5"}, source="armis")
    one, two = World(), World()
    one.resolve(a, b, link)
    two.resolve(b, a, link)
    assert one.merges == two.merges


def test_normalisation_of_operator_input() -> None:
    assert normalize_mac("00-1A-2B-3C-4D-5E") == UNIVERSAL
    assert normalize_mac("001a.2b3c.4d5e".replace(".", "")) == UNIVERSAL
    assert normalize_ip("2001:DB8::0:1") == "2001:db8::1"
    with pytest.raises(InvalidArgument, match="mac"):
        normalize_mac("not-a-mac")
    with pytest.raises(InvalidArgument, match="ip"):
        normalize_ip("10.0.0.300")


def test_a_device_is_rewritten_only_when_it_changed_or_last_seen_moved_enough() -> None:
    world = World()
    (device,) = world.resolve(obs(0, ip="10.0.0.5", mac=UNIVERSAL))
    stored = (device_state(device), device.last_seen)
    minute = timedelta(seconds=60)
    assert needs_write(device, None, minute) is Write.DEVICE  # new
    later = obs(0, ip="10.0.0.5", mac=UNIVERSAL)
    later.observed_at = T0 + timedelta(seconds=30)
    (same,) = world.resolve(later)
    # Only last_seen moved, by less than the resolution: nothing is written.
    assert needs_write(same, stored, minute) is Write.NOTHING
    assert not needs_write(same, stored, minute)
    same.last_seen = T0 + timedelta(seconds=60)
    assert needs_write(same, stored, minute) is Write.LAST_SEEN  # that column alone
    same.last_seen = T0 + timedelta(seconds=1)
    same.available = False
    assert needs_write(same, stored, minute) is Write.DEVICE  # availability changed
    same.last_seen = T0 + timedelta(seconds=90)
    assert needs_write(same, stored, minute) is Write.DEVICE  # and last_seen too: the whole row


def test_the_identity_cache_expires_and_evicts_the_least_recently_used() -> None:
    cache: TtlCache[str, str] = TtlCache(size=2, ttl=10.0)
    cache.put("a", "1", now=0.0)
    cache.put("b", "2", now=0.0)
    assert cache.get("a", now=5.0) == "1"  # "a" is now the most recently used
    cache.put("c", "3", now=5.0)
    assert (cache.get("b", now=5.0), cache.get("a", now=5.0), cache.get("c", now=5.0)) == (None, "1", "3")
    assert cache.get("a", now=10.5) is None  # expired
    assert cache.get("c", now=10.5) == "3"
    assert len(cache) == 1  # the expired entry was dropped when read


@pytest.mark.parametrize(
    ("seconds", "ip", "known", "mac", "available", "hostname"),
    [
        (10, "10.0.0.5", UNIVERSAL, UNIVERSAL, True, "host-0"),  # nothing changed, last_seen moved a little
        (90, "10.0.0.5", UNIVERSAL, UNIVERSAL, True, "host-0"),  # last_seen moved past the resolution
        (10, "10.0.0.5", UNIVERSAL, UNIVERSAL, False, "host-0"),  # went down
        (10, "10.0.0.5", UNIVERSAL, UNIVERSAL, True, ""),  # no host name: the known one stays
        (10, "10.0.0.5", UNIVERSAL, RANDOM, True, "other"),  # a random MAC never displaces the universal one
        (-60, "10.0.0.5", UNIVERSAL, UNIVERSAL, False, "old"),  # older than last_seen: attributes stay
        (10, "10.0.0.5", RANDOM, RANDOM, True, "host-0"),  # known by its random MAC, which it reports again
        (90, "10.0.0.5", RANDOM, RANDOM, False, "host-0"),
        (10, "10.0.0.5", RANDOM, UNIVERSAL, True, "host-0"),  # a universal MAC replaces the random one
        (10, "10.0.0.5", "", "", True, "host-0"),  # no MAC known or reported
    ],
)
def test_the_fast_fold_of_a_known_sweep_result_is_what_the_rules_decide(
    seconds: int, ip: str, known: str, mac: str, available: bool, hostname: str
) -> None:
    minute = timedelta(seconds=60)
    ruled, folded = World(), World()
    for n in (1, 3):
        seen = obs(n, ip="10.0.0.5", mac=known)
        seen.hostname = "host-0"
        (by_rules,) = ruled.resolve(seen)
        (by_fold,) = folded.resolve(seen)
    stored = (device_state(by_rules), by_rules.last_seen)
    # The fast path only takes results no older than the device's first_seen (T0 + 1 min).
    at = T0 + timedelta(minutes=3, seconds=seconds)
    (by_rules,) = ruled.resolve(Observation("acme", "dc1", ip, mac, hostname, available, at, "sweep", {}))
    write = needs_write(by_rules, stored, minute)
    if not write:
        by_rules.last_seen = stored[1]
    assert fold_known_sweep(by_fold, "dc1", ip, mac, hostname, available, at, minute) == write
    assert by_fold == by_rules
    carried = Observation("acme", "dc1", ip, mac, hostname, available, at, "sweep", {})
    assert sweep_identifiers("dc1", ip, mac) == tuple(k for keys in identifiers(carried) for k in keys)
