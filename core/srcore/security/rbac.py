"""The permission matrix: which role may call which RPC. Data, in this one place.

`srcore.api.authz.AuthzInterceptor` enforces it for every call, docs/security.md prints it,
and tests/tenancy/test_matrix.py walks it against the service descriptors, so an RPC without
an entry fails the tests before it can ship (and is refused at run time: the default is deny).

The roles nest: viewer < operator < admin < platform-admin. `package-download` is not a role
anyone is given: it is what a package's single-use download token proves, and it opens exactly
one RPC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    """What a principal may do. Values are the names used in certificates and tokens."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    PLATFORM_ADMIN = "platform-admin"
    PACKAGE_DOWNLOAD = "package-download"


# Roles an API token or an operator certificate can carry, lowest first.
ASSIGNABLE_ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.PLATFORM_ADMIN)

READ = frozenset(ASSIGNABLE_ROLES)
OPERATE = frozenset({Role.OPERATOR, Role.ADMIN, Role.PLATFORM_ADMIN})
ADMINISTER = frozenset({Role.ADMIN, Role.PLATFORM_ADMIN})
PLATFORM = frozenset({Role.PLATFORM_ADMIN})
DOWNLOAD = frozenset({Role.PACKAGE_DOWNLOAD})


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call one admin RPC, and how the call is audited.

    `mutates` calls are audited whatever their outcome (denials always are). `target` names the
    request fields that identify what the call acts on, and `tenant_field` the field naming the
    tenant; both feed the audit row and must never name a secret.
    """

    roles: frozenset[Role]
    mutates: bool = False
    target: tuple[str, ...] = ()
    tenant_field: str = "tenant"


_ADMIN = "/serviceradar.admin.v1."

MATRIX: dict[str, Rule] = {
    _ADMIN + "ClusterService/GetClusterStatus": Rule(READ),
    _ADMIN + "PollerService/ListPollers": Rule(READ),
    _ADMIN + "PollerService/GetPoller": Rule(READ),
    _ADMIN + "PollerService/SetMaintenance": Rule(OPERATE, True, ("poller_id", "enabled")),
    _ADMIN + "PollerService/DrainPoller": Rule(OPERATE, True, ("poller_id",)),
    _ADMIN + "PollerService/ResumePoller": Rule(OPERATE, True, ("poller_id",)),
    _ADMIN + "BatchService/ListBatches": Rule(READ),
    _ADMIN + "BatchService/GetBatch": Rule(READ),
    _ADMIN + "ResultService/ListResults": Rule(READ),
    _ADMIN + "ResultService/ListHostStates": Rule(READ),
    _ADMIN + "ResultService/ListCheckStates": Rule(READ),
    _ADMIN + "ResultService/ListSweepExecutions": Rule(READ),
    _ADMIN + "EventService/ListEvents": Rule(READ),
    _ADMIN + "EventService/WatchEvents": Rule(READ),
    _ADMIN + "TenantService/CreateTenant": Rule(PLATFORM, True, ("name",), "name"),
    _ADMIN + "TenantService/ListTenants": Rule(READ),
    _ADMIN + "TenantService/GetTenant": Rule(READ, tenant_field="name"),
    _ADMIN + "TenantService/SuspendTenant": Rule(PLATFORM, True, ("name",), "name"),
    _ADMIN + "TenantService/ResumeTenant": Rule(PLATFORM, True, ("name",), "name"),
    _ADMIN + "PartitionService/CreatePartition": Rule(OPERATE, True, ("name",)),
    _ADMIN + "PartitionService/ListPartitions": Rule(READ),
    _ADMIN + "PartitionService/GetPartition": Rule(READ),
    _ADMIN + "PartitionService/UpdatePartition": Rule(OPERATE, True, ("name",)),
    _ADMIN + "PartitionService/DeletePartition": Rule(ADMINISTER, True, ("name",)),
    _ADMIN + "TokenService/CreateToken": Rule(ADMINISTER, True, ("role",)),
    _ADMIN + "TokenService/ListTokens": Rule(ADMINISTER),
    _ADMIN + "TokenService/GetToken": Rule(ADMINISTER),
    _ADMIN + "TokenService/RevokeToken": Rule(ADMINISTER, True, ("token_id",)),
    _ADMIN + "PackageService/IssuePackage": Rule(OPERATE, True, ("partition", "poller_id")),
    _ADMIN + "PackageService/ListPackages": Rule(READ),
    _ADMIN + "PackageService/GetPackage": Rule(READ),
    _ADMIN + "PackageService/DownloadPackage": Rule(DOWNLOAD, True, ("package_id",)),
    _ADMIN + "PackageService/RevokePackage": Rule(OPERATE, True, ("package_id",)),
    _ADMIN + "PackageService/DeletePackage": Rule(ADMINISTER, True, ("package_id",)),
    _ADMIN + "AuditService/ListAuditEvents": Rule(ADMINISTER),
    # Work items and where they run (docs/dispatch.md); audit targets name items, never credentials.
    _ADMIN + "CheckService/CreateCheck": Rule(OPERATE, True, ("name",)),
    _ADMIN + "CheckService/ListChecks": Rule(READ),
    _ADMIN + "CheckService/GetCheck": Rule(READ),
    _ADMIN + "CheckService/UpdateCheck": Rule(OPERATE, True, ("name",)),
    _ADMIN + "CheckService/EnableCheck": Rule(OPERATE, True, ("name",)),
    _ADMIN + "CheckService/DisableCheck": Rule(OPERATE, True, ("name",)),
    _ADMIN + "CheckService/DeleteCheck": Rule(ADMINISTER, True, ("name",)),
    _ADMIN + "SweepService/CreateSweep": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SweepService/ListSweeps": Rule(READ),
    _ADMIN + "SweepService/GetSweep": Rule(READ),
    _ADMIN + "SweepService/UpdateSweep": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SweepService/EnableSweep": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SweepService/DisableSweep": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SweepService/DeleteSweep": Rule(ADMINISTER, True, ("name",)),
    _ADMIN + "SourceService/CreateSource": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SourceService/ListSources": Rule(READ),
    _ADMIN + "SourceService/GetSource": Rule(READ),
    _ADMIN + "SourceService/UpdateSource": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SourceService/EnableSource": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SourceService/DisableSource": Rule(OPERATE, True, ("name",)),
    _ADMIN + "SourceService/DeleteSource": Rule(ADMINISTER, True, ("name",)),
    _ADMIN + "AssignmentService/ListAssignments": Rule(READ),
    # Canonical devices (docs/identity.md): read-only, tenant-scoped.
    _ADMIN + "DeviceService/LookupDevice": Rule(READ),
    _ADMIN + "DeviceService/ListDevices": Rule(READ),
    _ADMIN + "DeviceService/GetDevice": Rule(READ),
    _ADMIN + "DeviceService/GetDeviceHistory": Rule(READ),
    # Alerts and notifiers (docs/alerts.md); audit targets name notifiers, never their URLs.
    _ADMIN + "AlertService/ListAlerts": Rule(READ),
    _ADMIN + "AlertService/GetAlert": Rule(READ),
    _ADMIN + "AlertService/AcknowledgeAlert": Rule(OPERATE, True, ("alert_id",)),
    _ADMIN + "AlertService/ResolveAlert": Rule(OPERATE, True, ("alert_id",)),
    _ADMIN + "NotifierService/CreateNotifier": Rule(OPERATE, True, ("name", "kind")),
    _ADMIN + "NotifierService/GetNotifier": Rule(READ),
    _ADMIN + "NotifierService/ListNotifiers": Rule(READ),
    _ADMIN + "NotifierService/UpdateNotifier": Rule(OPERATE, True, ("name",)),
    _ADMIN + "NotifierService/DeleteNotifier": Rule(ADMINISTER, True, ("name",)),
    _ADMIN + "NotifierService/TestNotifier": Rule(OPERATE, True, ("name",)),
    _ADMIN + "StatsService/GetStats": Rule(READ),
    # Checker templates (docs/templates.md); audit targets name the template, never its body.
    _ADMIN + "TemplateService/RegisterTemplate": Rule(OPERATE, True, ("name",)),
    _ADMIN + "TemplateService/GetTemplate": Rule(READ),
    _ADMIN + "TemplateService/ListTemplates": Rule(READ),
    _ADMIN + "TemplateService/DeleteTemplate": Rule(ADMINISTER, True, ("name",)),
}

# Services every caller may use without credentials: load balancers probe health, and the
# contract is public (grpcurl lists it through reflection).
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

# The edge surface: authenticated by an edge client certificate only, never by a token.
EDGE_SERVICES = frozenset({"serviceradar.edge.v1.EdgeService"})


class Surface(enum.Enum):
    """How a method is authorised."""

    PUBLIC = "public"
    EDGE = "edge"
    ADMIN = "admin"
    UNKNOWN = "unknown"


def surface(method: str) -> Surface:
    """Which surface a full method name ("/pkg.Service/Method") belongs to."""
    service = method.lstrip("/").partition("/")[0]
    if service in PUBLIC_SERVICES:
        return Surface.PUBLIC
    if service in EDGE_SERVICES:
        return Surface.EDGE
    if method in MATRIX:
        return Surface.ADMIN
    return Surface.UNKNOWN


def can_grant(granter: Role, role: Role) -> bool:
    """Whether a principal with role `granter` may create a token carrying `role`.

    Nobody hands out more than they hold, so a leaked admin token cannot mint a platform admin.
    """
    if granter not in ASSIGNABLE_ROLES or role not in ASSIGNABLE_ROLES:
        return False
    return ASSIGNABLE_ROLES.index(role) <= ASSIGNABLE_ROLES.index(granter)
