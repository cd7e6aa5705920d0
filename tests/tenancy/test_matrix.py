"""The permission matrix, walked in full: every principal against every admin RPC.

The RPCs come from the service descriptors the core registers, so an RPC added to a service
without a matrix entry fails here (and is refused at run time), and a matrix entry for an RPC
that does not exist fails too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool

from serviceradar.admin.v1 import package_service_pb2 as package_pb
from serviceradar.admin.v1 import package_service_pb2_grpc as package_grpc
from srcore.app import SERVICE_NAMES
from srcore.security.rbac import ASSIGNABLE_ROLES, MATRIX, Role, Surface, surface
from tests.tenancy.support import Site, code_of

EDGE_SERVICE = "serviceradar.edge.v1.EdgeService"
DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def registered_admin_methods() -> set[str]:
    """Every method of every service the core serves, but the edge service."""
    pool = descriptor_pool.Default()
    return {
        f"/{service}/{method.name}"
        for service in SERVICE_NAMES
        if service != EDGE_SERVICE
        for method in pool.FindServiceByName(service).methods
    }


def test_every_registered_admin_rpc_has_exactly_one_rule() -> None:
    methods = registered_admin_methods()
    assert methods, "no admin services registered"
    missing = sorted(methods - MATRIX.keys())
    assert not missing, f"RPCs without a permission rule (add them to srcore.security.rbac.MATRIX): {missing}"
    stale = sorted(MATRIX.keys() - methods)
    assert not stale, f"permission rules for RPCs the core does not serve: {stale}"
    assert all(surface(method) is Surface.ADMIN for method in methods)


def test_edge_and_public_services_are_never_admin_surface() -> None:
    pool = descriptor_pool.Default()
    for method in pool.FindServiceByName(EDGE_SERVICE).methods:
        assert surface(f"/{EDGE_SERVICE}/{method.name}") is Surface.EDGE
    assert surface("/grpc.health.v1.Health/Check") is Surface.PUBLIC
    assert surface("/serviceradar.admin.v1.NoSuchService/Anything") is Surface.UNKNOWN


@dataclass(frozen=True)
class Caller:
    """One principal of the walk and how to reach the core as it."""

    label: str
    role: Role | None  # None: no admin role at all (anonymous, edge)
    expect_when_denied: grpc.StatusCode


async def test_every_role_against_every_admin_rpc(site: Site) -> None:
    await site.create_tenant("acme")
    channels: list[tuple[Caller, grpc.aio.Channel]] = []
    for role in ASSIGNABLE_ROLES:
        token = await site.create_token("acme", role)
        channels.append(
            (Caller(f"token {role}", role, grpc.StatusCode.PERMISSION_DENIED), site.admin_port(token.secret))
        )
        tenant = None if role is Role.PLATFORM_ADMIN else "acme"
        cert = site.operator_cert(role, tenant)
        channels.append(
            (Caller(f"certificate {role}", role, grpc.StatusCode.PERMISSION_DENIED), site.mtls(cert))
        )
    async with site.platform() as channel:
        issued = await package_grpc.PackageServiceStub(channel).IssuePackage(
            package_pb.IssuePackageRequest(tenant="acme", partition="dc1", poller_id="p1")
        )
    channels.append(
        (
            Caller("download token", Role.PACKAGE_DOWNLOAD, grpc.StatusCode.PERMISSION_DENIED),
            site.admin_port(issued.download_token),
        )
    )
    channels.append((Caller("anonymous", None, grpc.StatusCode.UNAUTHENTICATED), site.admin_port(None)))
    channels.append(
        (
            Caller("edge certificate", None, grpc.StatusCode.PERMISSION_DENIED),
            site.mtls(site.edge_cert("acme", "p1")),
        )
    )
    before = len([e for e in await site.audit() if e.outcome in ("PERMISSION_DENIED", "UNAUTHENTICATED")])

    wrong: list[str] = []
    denials = 0
    try:
        for method in sorted(registered_admin_methods()):
            rule = MATRIX[method]
            # Empty requests: an admitted call fails validation or finds nothing, which is all
            # this test needs to tell "admitted" from "refused". Callers go concurrently, so an
            # admitted server stream waiting for its deadline costs the walk one deadline.
            codes = await asyncio.gather(*(code_of(channel, method, timeout=2) for _, channel in channels))
            for (caller, _), code in zip(channels, codes, strict=True):
                allowed = caller.role is not None and caller.role in rule.roles
                if allowed and code in DENIED:
                    wrong.append(f"{caller.label} was refused {method} ({code.name})")
                if not allowed:
                    denials += 1
                    if code != caller.expect_when_denied:
                        wrong.append(
                            f"{caller.label} got {code.name} from {method}, "
                            f"not {caller.expect_when_denied.name}"
                        )
    finally:
        for _, channel in channels:
            await channel.close()
    assert not wrong, "\n".join(wrong)

    after = [e for e in await site.audit() if e.outcome in ("PERMISSION_DENIED", "UNAUTHENTICATED")]
    assert len(after) - before == denials, "every denial is audited"
