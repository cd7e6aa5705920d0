"""Tenants and partitions: lifecycle, suspension refusing edges and tokens, CIDR validation,
and certificate identity binding an edge to one tenant and one poller."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from serviceradar.admin.v1 import partition_service_pb2 as partition_pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as partition_grpc
from serviceradar.admin.v1 import tenant_service_pb2 as pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from srcore.security.rbac import Role
from tests.tenancy.support import Site, register_request


async def set_state(site: Site, name: str, suspend: bool) -> pb.Tenant:
    async with site.platform() as channel:
        stub = pb_grpc.TenantServiceStub(channel)
        if suspend:
            return (await stub.SuspendTenant(pb.SuspendTenantRequest(name=name, reason="unpaid"))).tenant
        return (await stub.ResumeTenant(pb.ResumeTenantRequest(name=name))).tenant


async def test_create_list_get_and_duplicates(site: Site) -> None:
    async with site.platform() as channel:
        stub = pb_grpc.TenantServiceStub(channel)
        created = await stub.CreateTenant(pb.CreateTenantRequest(name="acme", display_name="Acme Corp"))
        assert created.tenant.state == pb.TENANT_STATE_ACTIVE
        assert created.tenant.display_name == "Acme Corp"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTenant(pb.CreateTenantRequest(name="acme"))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTenant(pb.CreateTenantRequest(name="Not A Slug"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await stub.ListTenants(pb.ListTenantsRequest(page_size=1))
        assert [t.name for t in listed.tenants] == ["acme"]
        rest = await stub.ListTenants(pb.ListTenantsRequest(page_token=listed.next_page_token))
        assert [t.name for t in rest.tenants] == ["default"] and not rest.next_page_token
    viewer = await site.create_token("acme", Role.VIEWER)
    async with site.admin_port(viewer.secret) as channel:
        own = await pb_grpc.TenantServiceStub(channel).GetTenant(pb.GetTenantRequest())
    assert own.tenant.name == "acme"


async def test_suspended_tenant_edges_tokens_and_certificates_are_refused(site: Site) -> None:
    await site.create_tenant("acme")
    token = await site.create_token("acme", Role.ADMIN)
    operator = site.mtls(site.operator_cert(Role.ADMIN, "acme"))
    async with site.edge(site.edge_cert("acme", "p1")) as edge:
        session = await edge.RegisterPoller(register_request("p1"))
        suspended = await set_state(site, "acme", suspend=True)
        assert suspended.state == pb.TENANT_STATE_SUSPENDED and suspended.suspend_reason == "unpaid"

        for call in (
            edge.RegisterPoller(register_request("p1")),
            edge.ReportHealth(edge_pb.ReportHealthRequest(session_id=session.session_id, poller_id="p1")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "suspended" in (caught.value.details() or "")
        for channel in (site.admin_port(token.secret), operator):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await partition_grpc.PartitionServiceStub(channel).ListPartitions(
                    partition_pb.ListPartitionsRequest()
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await channel.close()

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await set_state(site, "acme", suspend=True)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        await set_state(site, "acme", suspend=False)
        await edge.RegisterPoller(register_request("p1"))
    async with site.admin_port(token.secret) as channel:
        await partition_grpc.PartitionServiceStub(channel).ListPartitions(
            partition_pb.ListPartitionsRequest()
        )
    transitions = [
        (r["from_state"], r["to_state"])
        for r in await site.rows("state_transitions")
        if r["entity_type"] == "tenant"
    ]
    assert transitions == [("active", "suspended"), ("suspended", "active")]
    denied = [e for e in await site.audit(outcome="PERMISSION_DENIED") if e.tenant == "acme"]
    assert len(denied) == 4  # two edge calls, the token, the operator certificate


def bad_field(error: grpc.aio.AioRpcError) -> str:
    """The field the server's BadRequest detail names."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            request = error_details_pb2.BadRequest()
            status.details[0].Unpack(request)
            return str(request.field_violations[0].field)
    raise AssertionError("no BadRequest detail")


async def test_partitions_validate_cidrs_and_may_overlap(site: Site) -> None:
    await site.create_tenant("acme")
    operator = await site.create_token("acme", Role.OPERATOR)
    async with site.admin_port(operator.secret) as channel:
        stub = partition_grpc.PartitionServiceStub(channel)
        first = await stub.CreatePartition(
            partition_pb.CreatePartitionRequest(
                name="dc1", cidrs=["10.0.0.0/8", "2001:db8::/32", "192.168.1.0/24"]
            )
        )
        assert list(first.partition.cidrs) == ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"]
        # Two sites may number their networks alike: overlap across partitions is allowed.
        second = await stub.CreatePartition(
            partition_pb.CreatePartitionRequest(name="dc2", cidrs=["10.1.0.0/16"])
        )
        assert second.partition.tenant == "acme"
        for cidrs, field in (
            (["10.0.0.0/8", "not-a-network"], "cidrs[1]"),
            (["10.1.2.3/8"], "cidrs[0]"),
            (["10.0.0.0/33"], "cidrs[0]"),
            (["10.0.0.0/8", "10.0.0.0/8"], "cidrs[1]"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreatePartition(partition_pb.CreatePartitionRequest(name="dc3", cidrs=cidrs))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert bad_field(caught.value) == field
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreatePartition(partition_pb.CreatePartitionRequest(name="dc1"))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        updated = await stub.UpdatePartition(
            partition_pb.UpdatePartitionRequest(name="dc2", cidrs=["172.16.0.0/12"], description="north")
        )
        assert list(updated.partition.cidrs) == ["172.16.0.0/12"] and updated.partition.HasField("updated_at")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeletePartition(partition_pb.DeletePartitionRequest(name="dc2"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # deletion is for admins

    async with site.edge(site.edge_cert("acme", "p1")) as edge:
        await edge.RegisterPoller(register_request("p1", "dc2"))
    admin = await site.create_token("acme", Role.ADMIN)
    async with site.admin_port(admin.secret) as channel:
        stub = partition_grpc.PartitionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeletePartition(partition_pb.DeletePartitionRequest(name="dc2"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # a poller is in it
        await stub.DeletePartition(partition_pb.DeletePartitionRequest(name="dc1"))
        listed = await stub.ListPartitions(partition_pb.ListPartitionsRequest())
    assert [p.name for p in listed.partitions] == ["dc2"]


async def test_a_certificate_for_tenant_a_poller_p1_cannot_be_p2_or_act_in_tenant_b(site: Site) -> None:
    for tenant in ("alpha", "beta"):
        await site.create_tenant(tenant)
    async with site.edge(site.edge_cert("alpha", "p1")) as edge:
        for request in (
            register_request("p2"),
            register_request("p1", tenant="beta"),
            register_request("p2", tenant="beta"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await edge.RegisterPoller(request)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await edge.ReportHealth(edge_pb.ReportHealthRequest(session_id="x", poller_id="p2"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        session = await edge.RegisterPoller(register_request("p1"))
        assert session.tenant == "alpha"
    # Nothing was registered for p2 or in beta.
    pollers = [(r["tenant"], r["poller_id"]) for r in await site.rows("pollers")]
    assert pollers == [("alpha", "p1")]
    refusals = [e for e in await site.audit(outcome="PERMISSION_DENIED") if "EdgeService" in e.method]
    assert len(refusals) == 4
    assert {e.actor for e in refusals} == {"cert:spiffe://serviceradar/tenant/alpha/poller/p1"}


async def test_edge_of_an_unknown_tenant_is_refused(sqlite_site: Site) -> None:
    site = sqlite_site
    async with site.edge(site.edge_cert("ghost", "p1")) as edge:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await edge.RegisterPoller(register_request("p1"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
