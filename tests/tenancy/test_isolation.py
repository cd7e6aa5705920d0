"""Cross-tenant isolation: tenant beta's callers see none of tenant alpha's data through EVERY
read RPC, and cannot act on it through any write RPC; they get NOT_FOUND, never a code that
tells "it exists".

The cases are keyed by RPC and checked against the permission matrix and the registered
services, so an RPC added without an isolation case fails here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from serviceradar.admin.v1 import alert_service_pb2 as alert_pb
from serviceradar.admin.v1 import assignment_service_pb2 as assignment_pb
from serviceradar.admin.v1 import audit_service_pb2 as audit_pb
from serviceradar.admin.v1 import batch_service_pb2 as batch_pb
from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import cluster_service_pb2 as cluster_pb
from serviceradar.admin.v1 import device_service_pb2 as device_pb
from serviceradar.admin.v1 import event_service_pb2 as event_pb
from serviceradar.admin.v1 import notifier_service_pb2 as notifier_pb
from serviceradar.admin.v1 import package_service_pb2 as package_pb
from serviceradar.admin.v1 import package_service_pb2_grpc as package_grpc
from serviceradar.admin.v1 import partition_service_pb2 as partition_pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as partition_grpc
from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as poller_grpc
from serviceradar.admin.v1 import result_service_pb2 as result_pb
from serviceradar.admin.v1 import source_service_pb2 as source_pb
from serviceradar.admin.v1 import stats_service_pb2 as stats_pb
from serviceradar.admin.v1 import sweep_service_pb2 as sweep_pb
from serviceradar.admin.v1 import template_service_pb2 as template_pb
from serviceradar.admin.v1 import tenant_service_pb2 as tenant_pb
from serviceradar.admin.v1 import token_service_pb2 as token_pb
from serviceradar.edge.v1 import config_pb2
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from serviceradar.edge.v1 import results_pb2 as rpb
from srcore.domain.identity import canonical_id
from srcore.security.rbac import MATRIX, Role
from tests.helpers.results import RawStream, new_batch_id, push_chunks
from tests.tenancy.support import Site, invoke, io_classes, register_request
from tests.tenancy.test_matrix import registered_admin_methods

A, B = "alpha", "beta"
A_POLLER, B_POLLER = "alpha-poller-7", "beta-poller-3"
A_PARTITION, B_PARTITION = "alpha-dc", "beta-dc"
# Each tenant has a check, a sweep group and a source of this name.
A_WORK, B_WORK = "alpha-work", "beta-work"
# Alpha's alert (about its poller); each tenant has a notifier named like its work.
A_ALERT = "a1" * 16
S = "/serviceradar.admin.v1."


@dataclass
class World:
    """Tenant alpha's data (whose ids beta must never see) and beta's callers."""

    site: Site
    a_viewer: str
    a_token_id: str
    a_package_id: str
    a_batch_id: str
    b_download: str
    callers: list[tuple[str, grpc.aio.Channel]]

    @property
    def secrets(self) -> list[str]:
        """Strings that occur only in tenant alpha's data."""
        return [A, A_POLLER, A_PARTITION, self.a_token_id, self.a_package_id, self.a_batch_id]


async def create_work(channel: grpc.aio.Channel, partition: str, name: str) -> None:
    """A check, a sweep group and a source (with credentials) named `name`."""
    await invoke(
        channel,
        S + "CheckService/CreateCheck",
        check_pb.CreateCheckRequest(
            name=name,
            spec=check_pb.CheckSpec(
                partition=partition, check_type=config_pb2.CHECK_TYPE_ICMP, target="10.0.0.1"
            ),
        ),
    )
    sweep = sweep_pb.SweepSpec(partition=partition, cidrs=["10.0.0.0/24"])
    sweep.icmp_interval.FromSeconds(300)
    await invoke(channel, S + "SweepService/CreateSweep", sweep_pb.CreateSweepRequest(name=name, spec=sweep))
    source = source_pb.SourceSpec(
        partition=partition, kind=config_pb2.SOURCE_KIND_NETBOX, endpoint="https://netbox.example"
    )
    await invoke(
        channel,
        S + "SourceService/CreateSource",
        source_pb.CreateSourceRequest(name=name, spec=source, credentials={"token": f"{name}-token"}),
    )
    template = template_pb.RegisterTemplateRequest(
        name=name, checker_type="icmp", format=template_pb.TEMPLATE_FORMAT_JSON, body='{"host": "10.0.0.1"}'
    )
    await invoke(channel, S + "TemplateService/RegisterTemplate", template)
    notifier = notifier_pb.CreateNotifierRequest(
        name=name, kind=notifier_pb.NOTIFIER_KIND_WEBHOOK, url=f"https://hooks.example/{name}"
    )
    await invoke(channel, S + "NotifierService/CreateNotifier", notifier)


async def build_world(site: Site) -> World:
    """Two tenants with partitions over the same IP space, pollers, results, tokens, packages,
    events and audit rows; beta's admin, by token and by certificate, as the callers."""
    for tenant in (A, B):
        await site.create_tenant(tenant)
    a_admin = await site.create_token(A, Role.ADMIN)
    a_viewer = await site.create_token(A, Role.VIEWER)
    b_admin = await site.create_token(B, Role.ADMIN)
    async with site.admin_port(a_admin.secret) as channel:
        await partition_grpc.PartitionServiceStub(channel).CreatePartition(
            partition_pb.CreatePartitionRequest(name=A_PARTITION, cidrs=["10.0.0.0/8"])
        )
        stub = package_grpc.PackageServiceStub(channel)
        package = await stub.IssuePackage(
            package_pb.IssuePackageRequest(partition=A_PARTITION, poller_id=A_POLLER)
        )
        # A revoked package writes alpha state transitions, hence alpha events to hide.
        spare = await stub.IssuePackage(
            package_pb.IssuePackageRequest(partition=A_PARTITION, poller_id="spare")
        )
        await stub.RevokePackage(package_pb.RevokePackageRequest(package_id=spare.package.package_id))
        await create_work(channel, A_PARTITION, A_WORK)
    async with site.admin_port(b_admin.secret) as channel:
        await partition_grpc.PartitionServiceStub(channel).CreatePartition(
            partition_pb.CreatePartitionRequest(name=B_PARTITION, cidrs=["10.0.0.0/8"])
        )
        await create_work(channel, B_PARTITION, B_WORK)
        b_package = await package_grpc.PackageServiceStub(channel).IssuePackage(
            package_pb.IssuePackageRequest(partition=B_PARTITION, poller_id=B_POLLER)
        )
    async with site.edge(site.edge_cert(B, B_POLLER)) as edge:
        await edge.RegisterPoller(register_request(B_POLLER, B_PARTITION))
    batch_id = new_batch_id()
    async with site.edge(site.edge_cert(A, A_POLLER)) as edge:
        await edge.RegisterPoller(register_request(A_POLLER, A_PARTITION))
        stream = RawStream(edge)
        stream.send(
            edge_pb.ReportResultsRequest(
                open=rpb.BatchOpen(
                    batch_id=batch_id,
                    result_type=rpb.RESULT_TYPE_SWEEP_HOSTS,
                    partition=A_PARTITION,
                    # An execution too, so ListSweepExecutions has alpha's to hide.
                    sweep=rpb.SweepInfo(
                        execution_id=batch_id, sweep_id="alpha-sweep", target_network="10.0.0.0/24"
                    ),
                )
            )
        )
        await push_chunks(stream, batch_id, total_chunks=1, per_chunk=3)
        stream.close()
    await site.execute(
        "INSERT INTO alerts (alert_id, tenant, rule, subject, severity, state, title, created_at, updated_at)"
        " VALUES (:id, :tenant, 'poller_offline', :poller, 'critical', 'pending', :title, :at, :at)",
        id=A_ALERT, tenant=A, poller=A_POLLER, title=f"poller {A_POLLER} is offline",
        at=site.app.access.clock(),
    )  # fmt: skip
    b_cert = site.operator_cert(Role.ADMIN, B, "beta-admin")
    return World(
        site=site,
        a_viewer=a_viewer.secret,
        a_token_id=a_viewer.token.token_id,
        a_package_id=package.package.package_id,
        a_batch_id=batch_id,
        b_download=b_package.download_token,
        callers=[
            ("beta admin token", site.admin_port(b_admin.secret)),
            ("beta admin certificate", site.mtls(b_cert)),
        ],
    )


async def read_all(channel: grpc.aio.Channel, method: str, request: Message) -> list[Message]:
    """Every message a call returns; a server stream is read until its short deadline."""
    request_cls, response_cls, _, server_streaming = io_classes(method)
    if not server_streaming:
        return [await invoke(channel, method, request)]
    call = channel.unary_stream(
        method,
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )(request, timeout=1.5)
    received: list[Message] = []
    try:
        async for message in call:
            received.append(message)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return received


async def not_found(channel: grpc.aio.Channel, method: str, request: Message) -> None:
    """The call ends NOT_FOUND."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all(channel, method, request)
    code, details = caught.value.code(), caught.value.details()
    assert code == grpc.StatusCode.NOT_FOUND, (
        f"{method} {text_format.MessageToString(request, as_one_line=True)}: {code} {details}"
    )


def leaks(world: World, messages: list[Message]) -> list[str]:
    """Alpha's ids found in what beta received."""
    text = "\n".join(text_format.MessageToString(m) for m in messages)
    return [secret for secret in world.secrets if secret in text]


Case = Callable[[World, grpc.aio.Channel], Awaitable[None]]


def listing(method: str, make: Callable[[str], Message], mine: str | None = None) -> Case:
    """A list RPC: unfiltered it shows none of alpha's data (but beta's own `mine`, so the
    check proves something); asking for alpha's tenant is NOT_FOUND."""

    async def case(world: World, channel: grpc.aio.Channel) -> None:
        received = await read_all(channel, method, make(""))
        assert not leaks(world, received), f"{method} showed alpha's {leaks(world, received)}"
        if mine is not None:
            assert any(mine in text_format.MessageToString(m) for m in received), (
                f"{method} lacks beta's {mine}"
            )
        await not_found(channel, method, make(A))

    return case


def lookup(method: str, make: Callable[[World, str], Message]) -> Case:
    """A get RPC naming alpha's entity: NOT_FOUND in the caller's tenant and naming alpha."""

    async def case(world: World, channel: grpc.aio.Channel) -> None:
        await not_found(channel, method, make(world, ""))
        await not_found(channel, method, make(world, A))

    return case


def by_id(method: str, make: Callable[[World], Message]) -> Case:
    """A call naming alpha's entity by a globally unique id: NOT_FOUND."""

    async def case(world: World, channel: grpc.aio.Channel) -> None:
        await not_found(channel, method, make(world))

    return case


async def cluster_status(world: World, channel: grpc.aio.Channel) -> None:
    received = await read_all(
        channel, S + "ClusterService/GetClusterStatus", cluster_pb.GetClusterStatusRequest()
    )
    assert not leaks(world, received)


async def tenant_list(world: World, channel: grpc.aio.Channel) -> None:
    received = await read_all(channel, S + "TenantService/ListTenants", tenant_pb.ListTenantsRequest())
    assert not leaks(world, received)
    assert [t.name for t in received[0].tenants] == [B]  # type: ignore[attr-defined]


EPOCH = Timestamp(seconds=1)
SWEEP = rpb.RESULT_TYPE_SWEEP_HOSTS

READ_CASES: dict[str, Case] = {
    S + "ClusterService/GetClusterStatus": cluster_status,
    S + "PollerService/ListPollers": listing(
        S + "PollerService/ListPollers", lambda t: poller_pb.ListPollersRequest(tenant=t), B_POLLER
    ),
    S + "PollerService/GetPoller": lookup(
        S + "PollerService/GetPoller", lambda w, t: poller_pb.GetPollerRequest(poller_id=A_POLLER, tenant=t)
    ),
    S + "BatchService/ListBatches": listing(
        S + "BatchService/ListBatches", lambda t: batch_pb.ListBatchesRequest(tenant=t)
    ),
    S + "BatchService/GetBatch": lookup(
        S + "BatchService/GetBatch",
        lambda w, t: batch_pb.GetBatchRequest(poller_id=A_POLLER, batch_id=w.a_batch_id, tenant=t),
    ),
    S + "ResultService/ListResults": listing(
        S + "ResultService/ListResults", lambda t: result_pb.ListResultsRequest(result_type=SWEEP, tenant=t)
    ),
    S + "ResultService/ListHostStates": listing(
        S + "ResultService/ListHostStates", lambda t: result_pb.ListHostStatesRequest(tenant=t)
    ),
    S + "ResultService/ListCheckStates": listing(
        S + "ResultService/ListCheckStates", lambda t: result_pb.ListCheckStatesRequest(tenant=t)
    ),
    S + "ResultService/ListSweepExecutions": listing(
        S + "ResultService/ListSweepExecutions", lambda t: result_pb.ListSweepExecutionsRequest(tenant=t)
    ),
    S + "EventService/ListEvents": listing(
        S + "EventService/ListEvents", lambda t: event_pb.ListEventsRequest(tenant=t)
    ),
    S + "EventService/WatchEvents": listing(
        S + "EventService/WatchEvents", lambda t: event_pb.WatchEventsRequest(tenant=t, since=EPOCH)
    ),
    S + "TenantService/ListTenants": tenant_list,
    S + "TenantService/GetTenant": by_id(
        S + "TenantService/GetTenant", lambda w: tenant_pb.GetTenantRequest(name=A)
    ),
    S + "PartitionService/ListPartitions": listing(
        S + "PartitionService/ListPartitions",
        lambda t: partition_pb.ListPartitionsRequest(tenant=t),
        B_PARTITION,
    ),
    S + "PartitionService/GetPartition": lookup(
        S + "PartitionService/GetPartition",
        lambda w, t: partition_pb.GetPartitionRequest(tenant=t, name=A_PARTITION),
    ),
    S + "TokenService/ListTokens": listing(
        S + "TokenService/ListTokens",
        lambda t: token_pb.ListTokensRequest(tenant=t, include_inactive=True),
        B,
    ),
    S + "TokenService/GetToken": by_id(
        S + "TokenService/GetToken", lambda w: token_pb.GetTokenRequest(token_id=w.a_token_id)
    ),
    S + "PackageService/ListPackages": listing(
        S + "PackageService/ListPackages", lambda t: package_pb.ListPackagesRequest(tenant=t), B_POLLER
    ),
    S + "PackageService/GetPackage": by_id(
        S + "PackageService/GetPackage", lambda w: package_pb.GetPackageRequest(package_id=w.a_package_id)
    ),
    S + "AuditService/ListAuditEvents": listing(
        S + "AuditService/ListAuditEvents", lambda t: audit_pb.ListAuditEventsRequest(tenant=t), B_PARTITION
    ),
}


def _request(module: Any, message: str, **fields: Any) -> Callable[[World], Message]:
    """A case's request: `module.<message>(**fields)`."""
    return lambda w: cast(Message, getattr(module, message)(**fields))


def _in_tenant(module: Any, message: str, **fields: Any) -> Callable[[str], Message]:
    """A listing's request in a tenant: `module.<message>(tenant=..., **fields)`."""
    return lambda t: cast(Message, getattr(module, message)(tenant=t, **fields))


def _lookup_request(module: Any, message: str) -> Callable[[World, str], Message]:
    """A lookup's request of alpha's item in a tenant."""
    return lambda w, t: cast(Message, getattr(module, message)(tenant=t, name=A_WORK))


_WORK_SERVICES = (
    ("CheckService", "Check", check_pb),
    ("SweepService", "Sweep", sweep_pb),
    ("SourceService", "Source", source_pb),
)
for _service, _noun, _module in _WORK_SERVICES:
    _list = f"{S}{_service}/List{_noun}s"
    READ_CASES[_list] = listing(_list, _in_tenant(_module, f"List{_noun}sRequest"), B_WORK)
    _get = f"{S}{_service}/Get{_noun}"
    READ_CASES[_get] = lookup(_get, _lookup_request(_module, f"Get{_noun}Request"))
READ_CASES[S + "AssignmentService/ListAssignments"] = listing(
    S + "AssignmentService/ListAssignments", lambda t: assignment_pb.ListAssignmentsRequest(tenant=t), B_WORK
)
READ_CASES[S + "AlertService/ListAlerts"] = listing(
    S + "AlertService/ListAlerts", lambda t: alert_pb.ListAlertsRequest(tenant=t)
)
READ_CASES[S + "AlertService/GetAlert"] = lookup(
    S + "AlertService/GetAlert", lambda w, t: alert_pb.GetAlertRequest(tenant=t, alert_id=A_ALERT)
)
READ_CASES[S + "NotifierService/ListNotifiers"] = listing(
    S + "NotifierService/ListNotifiers", lambda t: notifier_pb.ListNotifiersRequest(tenant=t), B_WORK
)
READ_CASES[S + "NotifierService/GetNotifier"] = lookup(
    S + "NotifierService/GetNotifier", _lookup_request(notifier_pb, "GetNotifierRequest")
)
READ_CASES[S + "StatsService/GetStats"] = listing(
    S + "StatsService/GetStats", lambda t: stats_pb.GetStatsRequest(tenant=t), B
)
READ_CASES[S + "TemplateService/ListTemplates"] = listing(
    S + "TemplateService/ListTemplates", lambda t: template_pb.ListTemplatesRequest(tenant=t), B_WORK
)
READ_CASES[S + "TemplateService/GetTemplate"] = lookup(
    S + "TemplateService/GetTemplate", _lookup_request(template_pb, "GetTemplateRequest")
)


# Alpha's sweep (build_world) made devices; this one is alpha's host-0 at 10.0.0.0.
A_DEVICE = canonical_id(A, ("ip", "10.0.0.0", A_PARTITION))


def devices_case(method: str, make: Callable[[str], Message]) -> Case:
    """A DeviceService read: alpha's viewer sees alpha's device (so the check proves something);
    beta sees none of it, and naming alpha's tenant is NOT_FOUND."""

    async def case(world: World, channel: grpc.aio.Channel) -> None:
        assert world.site.app.identity is not None
        await world.site.app.identity.settle()
        async with world.site.admin_port(world.a_viewer) as own:
            assert "host-0" in text_format.MessageToString(await invoke(own, method, make("")))
        await not_found(channel, method, make(A))
        if method.endswith("/ListDevices"):
            received = await read_all(channel, method, make(""))
            assert A_DEVICE not in text_format.MessageToString(received[0])
        else:
            await not_found(channel, method, make(""))

    return case


READ_CASES[S + "DeviceService/ListDevices"] = devices_case(
    S + "DeviceService/ListDevices", lambda t: device_pb.ListDevicesRequest(tenant=t)
)
READ_CASES[S + "DeviceService/GetDevice"] = devices_case(
    S + "DeviceService/GetDevice", lambda t: device_pb.GetDeviceRequest(tenant=t, device_id=A_DEVICE)
)
READ_CASES[S + "DeviceService/GetDeviceHistory"] = devices_case(
    S + "DeviceService/GetDeviceHistory",
    lambda t: device_pb.GetDeviceHistoryRequest(tenant=t, device_id=A_DEVICE),
)
READ_CASES[S + "DeviceService/LookupDevice"] = devices_case(
    S + "DeviceService/LookupDevice",
    lambda t: device_pb.LookupDeviceRequest(tenant=t, ip="10.0.0.0", partition=A_PARTITION),
)


# Tenant-level writes are for platform admins only: beta's admin is refused by role, the same
# answer whatever the tenant named, so nothing about alpha leaks.
PLATFORM_ONLY = {
    S + "TenantService/CreateTenant",
    S + "TenantService/SuspendTenant",
    S + "TenantService/ResumeTenant",
}

WRITE_CASES: dict[str, list[Callable[[World], Message]]] = {
    S + "PollerService/SetMaintenance": [
        lambda w: poller_pb.SetMaintenanceRequest(poller_id=A_POLLER, enabled=True),
        lambda w: poller_pb.SetMaintenanceRequest(tenant=A, poller_id=A_POLLER, enabled=True),
    ],
    S + "PartitionService/CreatePartition": [
        lambda w: partition_pb.CreatePartitionRequest(tenant=A, name="sneaky", cidrs=["192.168.0.0/16"])
    ],
    S + "PartitionService/UpdatePartition": [
        lambda w: partition_pb.UpdatePartitionRequest(name=A_PARTITION, cidrs=["192.168.0.0/16"]),
        lambda w: partition_pb.UpdatePartitionRequest(tenant=A, name=A_PARTITION, cidrs=["192.168.0.0/16"]),
    ],
    S + "PartitionService/DeletePartition": [
        lambda w: partition_pb.DeletePartitionRequest(name=A_PARTITION),
        lambda w: partition_pb.DeletePartitionRequest(tenant=A, name=A_PARTITION),
    ],
    S + "TokenService/CreateToken": [
        lambda w: token_pb.CreateTokenRequest(tenant=A, role=token_pb.ROLE_VIEWER),
    ],
    S + "TokenService/RevokeToken": [lambda w: token_pb.RevokeTokenRequest(token_id=w.a_token_id)],
    S + "PackageService/IssuePackage": [
        lambda w: package_pb.IssuePackageRequest(tenant=A, partition=A_PARTITION, poller_id="sneaky")
    ],
    S + "PackageService/RevokePackage": [
        lambda w: package_pb.RevokePackageRequest(package_id=w.a_package_id)
    ],
    S + "PackageService/DeletePackage": [
        lambda w: package_pb.DeletePackageRequest(package_id=w.a_package_id)
    ],
}


for _service, _noun, _module in _WORK_SERVICES:
    WRITE_CASES[f"{S}{_service}/Create{_noun}"] = [
        _request(_module, f"Create{_noun}Request", tenant=A, name="sneaky")
    ]
    for _verb in ("Update", "Enable", "Disable", "Delete"):
        WRITE_CASES[f"{S}{_service}/{_verb}{_noun}"] = [
            _request(_module, f"{_verb}{_noun}Request", name=A_WORK),
            _request(_module, f"{_verb}{_noun}Request", tenant=A, name=A_WORK),
        ]
WRITE_CASES[S + "TemplateService/RegisterTemplate"] = [
    _request(template_pb, "RegisterTemplateRequest", tenant=A, name="sneaky")
]
WRITE_CASES[S + "TemplateService/DeleteTemplate"] = [
    _request(template_pb, "DeleteTemplateRequest", name=A_WORK),
    _request(template_pb, "DeleteTemplateRequest", tenant=A, name=A_WORK),
]
for _verb in ("Acknowledge", "Resolve"):
    WRITE_CASES[f"{S}AlertService/{_verb}Alert"] = [
        _request(alert_pb, f"{_verb}AlertRequest", alert_id=A_ALERT),
        _request(alert_pb, f"{_verb}AlertRequest", tenant=A, alert_id=A_ALERT),
    ]
WRITE_CASES[S + "NotifierService/CreateNotifier"] = [
    _request(
        notifier_pb, "CreateNotifierRequest", tenant=A, name="sneaky",
        kind=notifier_pb.NOTIFIER_KIND_WEBHOOK, url="https://hooks.example/sneaky",
    )
]  # fmt: skip
for _verb in ("Update", "Delete", "Test"):
    WRITE_CASES[f"{S}NotifierService/{_verb}Notifier"] = [
        _request(notifier_pb, f"{_verb}NotifierRequest", name=A_WORK),
        _request(notifier_pb, f"{_verb}NotifierRequest", tenant=A, name=A_WORK),
    ]
for _verb in ("Drain", "Resume"):
    WRITE_CASES[f"{S}PollerService/{_verb}Poller"] = [
        _request(poller_pb, f"{_verb}PollerRequest", poller_id=A_POLLER),
        _request(poller_pb, f"{_verb}PollerRequest", tenant=A, poller_id=A_POLLER),
    ]


def test_every_rpc_has_an_isolation_case() -> None:
    registered = registered_admin_methods()
    reads = {m for m in registered if not MATRIX[m].mutates}
    assert set(READ_CASES) == reads, f"read RPCs without a case: {sorted(reads - set(READ_CASES))}"
    writes = {m for m in registered if MATRIX[m].mutates}
    covered = set(WRITE_CASES) | PLATFORM_ONLY | {S + "PackageService/DownloadPackage"}
    assert covered == writes, f"write RPCs without a case: {sorted(writes - covered)}"


async def test_tenant_b_sees_and_touches_nothing_of_tenant_a(site: Site) -> None:
    world = await build_world(site)
    try:
        for label, channel in world.callers:
            for case in READ_CASES.values():
                try:
                    await case(world, channel)
                except AssertionError as exc:
                    raise AssertionError(f"{label}: {exc}") from None
        for label, channel in world.callers:
            for method, makers in WRITE_CASES.items():
                for make in makers:
                    try:
                        await not_found(channel, method, make(world))
                    except AssertionError as exc:
                        raise AssertionError(f"{label}: {exc}") from None
            for method in PLATFORM_ONLY:
                request = io_classes(method)[0](name=A)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await invoke(channel, method, request)
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Beta's own download token opens beta's package only.
        async with site.admin_port(world.b_download) as channel:
            await not_found(
                channel,
                S + "PackageService/DownloadPackage",
                package_pb.DownloadPackageRequest(package_id=world.a_package_id),
            )
    finally:
        for _, channel in world.callers:
            await channel.close()

    # Alpha is untouched: its token works, its partition and package are as they were.
    async with site.admin_port(world.a_viewer) as channel:
        partition = await partition_grpc.PartitionServiceStub(channel).GetPartition(
            partition_pb.GetPartitionRequest(name=A_PARTITION)
        )
        assert list(partition.partition.cidrs) == ["10.0.0.0/8"]
        package = await package_grpc.PackageServiceStub(channel).GetPackage(
            package_pb.GetPackageRequest(package_id=world.a_package_id)
        )
        assert package.package.state == package_pb.PACKAGE_STATE_ISSUED
        partitions = await partition_grpc.PartitionServiceStub(channel).ListPartitions(
            partition_pb.ListPartitionsRequest()
        )
        assert [p.name for p in partitions.partitions] == [A_PARTITION]
        for _, noun, module in _WORK_SERVICES:
            item = await invoke(
                channel, f"{S}{noun}Service/Get{noun}", getattr(module, f"Get{noun}Request")(name=A_WORK)
            )
            assert getattr(item, noun.lower()).enabled, f"alpha's {noun.lower()} is untouched"
        template = await invoke(
            channel, S + "TemplateService/GetTemplate", template_pb.GetTemplateRequest(name=A_WORK)
        )
        assert template.template.version == 1, "alpha's template is untouched"
        poller = await poller_grpc.PollerServiceStub(channel).GetPoller(
            poller_pb.GetPollerRequest(poller_id=A_POLLER)
        )
        assert poller.poller.state != poller_pb.POLLER_STATE_MAINTENANCE
