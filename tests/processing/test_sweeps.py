"""Sweep results become each host's latest state; a completed sweep closes its execution."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from serviceradar.admin.v1 import result_service_pb2 as pb
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.store.ingest_tables import host_latest
from tests.helpers.core import RunningCore
from tests.processing.conftest import MAX_PORTS, executions, host_states, sweep, sweep_host


async def test_a_sweep_sets_availability_rtt_loss_response_time_and_bounded_ports(core: RunningCore) -> None:
    await sweep(
        core,
        [
            sweep_host(
                "10.9.0.1", rtt_us=1500, loss=0.25, open_ports={80: 2000, 22: 3000}, closed_ports=[443]
            ),
            sweep_host("10.9.0.2", open_ports={port: 900 + port for port in range(10, 0, -1)}),
            sweep_host("10.9.0.3", available=False, loss=1.0),
        ],
        execution_id="exec-1",
    )
    hosts = await host_states(core, partition="dc1")
    first, many, down = hosts["dc1", "10.9.0.1"], hosts["dc1", "10.9.0.2"], hosts["dc1", "10.9.0.3"]
    assert first.available and first.icmp_rtt.ToMicroseconds() == 1500
    assert first.icmp_packet_loss == 0.25
    assert first.response_time.ToMicroseconds() == 2000  # the fastest open port
    assert list(first.open_ports) == [22, 80] and not first.ports_truncated
    assert (first.poller_id, first.execution_id) == ("demo", "exec-1")
    # Ten open ports, bounded to the lowest MAX_PORTS, and flagged.
    assert list(many.open_ports) == list(range(1, MAX_PORTS + 1)) and many.ports_truncated
    assert not down.available and down.icmp_packet_loss == 1.0
    assert not down.HasField("icmp_rtt") and not down.HasField("response_time") and not down.open_ports

    closed = (await executions(core))["exec-1"]
    assert closed.state == "completed" and closed.HasField("closed_at")
    assert (closed.hosts_total, closed.hosts_available, closed.hosts_unavailable) == (3, 2, 1)
    assert closed.hosts_marked_unseen == 0

    # A later sweep brings newer state: the host is down now and no port is open.
    await sweep(core, [sweep_host("10.9.0.1", available=False, loss=1.0)], execution_id="exec-2")
    later = (await host_states(core))["dc1", "10.9.0.1"]
    assert not later.available and not later.open_ports and not later.HasField("icmp_rtt")
    assert later.execution_id == "exec-2"


async def seed_other_tenant(core: RunningCore, ip: str) -> None:
    """A host of tenant "acme" in a partition named like ours: the store as another tenant left it."""
    async with core.app.db.begin() as conn:
        await conn.execute(
            host_latest.insert().values(
                tenant="acme", partition="dc1", ip=ip, mac="", hostname="", available=True, icmp_rtt_us=None,
                icmp_loss=0.0, open_ports="", poller_id="p", execution_id="x",
                observed_at=datetime(2020, 1, 1, tzinfo=UTC),
            )
        )  # fmt: skip


async def test_a_completed_sweep_marks_hosts_of_its_network_it_did_not_see(core: RunningCore) -> None:
    await sweep(core, [sweep_host(f"10.9.0.{i}") for i in (1, 2, 3)], execution_id="e1")
    # The same address in another partition, and a host of this partition outside the network.
    await sweep(core, [sweep_host("10.9.0.2")], execution_id="e-dc2", partition="dc2")
    await sweep(
        core, [sweep_host("10.8.0.5")], execution_id="e-other", sweep_id="sweep-b", target="10.8.0.0/24"
    )
    await seed_other_tenant(core, "10.9.0.2")
    # A failed execution vouches for nothing: it marks no host.
    await sweep(core, [], execution_id="e-failed", completion=rpb.SWEEP_COMPLETION_FAILED)
    assert all(h.available for h in (await host_states(core)).values())

    await sweep(core, [sweep_host("10.9.0.1")], execution_id="e2")

    hosts = await host_states(core)
    assert hosts["dc1", "10.9.0.1"].available
    assert not hosts["dc1", "10.9.0.2"].available and not hosts["dc1", "10.9.0.3"].available
    # Unseen hosts keep what was last measured of them; only availability changes.
    assert hosts["dc1", "10.9.0.2"].execution_id == "e1"
    assert hosts["dc1", "10.8.0.5"].available, "outside the swept network"
    assert hosts["dc2", "10.9.0.2"].available, "another partition"
    async with core.app.db.connect() as conn:
        acme = (
            await conn.execute(sa.select(host_latest.c.available).where(host_latest.c.tenant == "acme"))
        ).scalar_one()
    assert acme, "another tenant"

    closed = await executions(core)
    assert (closed["e2"].hosts_total, closed["e2"].hosts_available, closed["e2"].hosts_marked_unseen) == (
        1,
        1,
        2,
    )
    assert closed["e-failed"].state == "failed" and closed["e-failed"].hosts_marked_unseen == 0
    assert closed["e-failed"].HasField("closed_at")


async def test_a_sweep_without_a_cidr_target_vouches_for_hosts_of_its_sweep_id(core: RunningCore) -> None:
    await sweep(
        core, [sweep_host("10.1.0.1"), sweep_host("10.2.0.2")], execution_id="l1", sweep_id="list", target=""
    )
    await sweep(core, [sweep_host("10.3.0.3")], execution_id="o1", sweep_id="other", target="")

    await sweep(core, [sweep_host("10.1.0.1")], execution_id="l2", sweep_id="list", target="")

    hosts = await host_states(core)
    assert hosts["dc1", "10.1.0.1"].available
    assert not hosts["dc1", "10.2.0.2"].available, "last reported by the same sweep"
    assert hosts["dc1", "10.3.0.3"].available, "reported by another sweep"
    assert (await executions(core))["l2"].hosts_marked_unseen == 1


async def test_an_unavailable_filter_lists_only_down_hosts(core: RunningCore) -> None:
    await sweep(core, [sweep_host("10.9.0.1"), sweep_host("10.9.0.2", available=False)], execution_id="f1")
    down = await host_states(core, availability=pb.AVAILABILITY_FILTER_UNAVAILABLE)
    assert list(down) == [("dc1", "10.9.0.2")]
