"""TenantService: create, list, show, suspend and resume tenants."""

from __future__ import annotations

from serviceradar.admin.v1 import tenant_service_pb2 as pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as pb_grpc
from srcore.api import paging
from srcore.api.access import Access
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.errors import NotFound
from srcore.domain.tenancy import Tenant, TenantState, display_name
from srcore.security.principal import caller, note

TENANT_STATES = {TenantState.ACTIVE: pb.TENANT_STATE_ACTIVE, TenantState.SUSPENDED: pb.TENANT_STATE_SUSPENDED}


def tenant_message(tenant: Tenant) -> pb.Tenant:
    """The admin view of a tenant."""
    return pb.Tenant(
        name=tenant.name,
        display_name=tenant.display_name,
        state=TENANT_STATES[tenant.state],
        created_at=timestamp(tenant.created_at),
        suspended_at=timestamp(tenant.suspended_at),
        suspend_reason=tenant.suspend_reason,
    )


class TenantServicer(pb_grpc.TenantServiceServicer):
    """Tenants, scoped to the caller: a tenant principal sees only its own."""

    def __init__(self, access: Access) -> None:
        self._access = access

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Context
    ) -> pb.CreateTenantResponse:
        """Create an active tenant (platform admins only, by the permission matrix)."""
        name = validation.slug("name", request.name)
        tenant = await self._access.tenants.create_tenant(
            name, display_name(request.display_name, name), self._access.clock()
        )
        note(tenant=name)
        return pb.CreateTenantResponse(tenant=tenant_message(tenant))

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Context) -> pb.ListTenantsResponse:
        """One page of the tenants the caller can see, by name."""
        principal = caller()
        size = paging.page_size(request.page_size)
        after = paging.text_key(request.page_token, 1)
        found = await self._access.tenants.list_tenants(
            principal.tenant, size + 1, after[0] if after else None
        )
        page = found[:size]
        return pb.ListTenantsResponse(
            tenants=[tenant_message(t) for t in page],
            next_page_token=paging.encode_token([page[-1].name]) if len(found) > size else "",
        )

    async def GetTenant(self, request: pb.GetTenantRequest, context: Context) -> pb.GetTenantResponse:
        """One tenant; NOT_FOUND for one the caller cannot see."""
        name = caller().tenant_for(request.name)
        tenant = await self._access.tenants.get_tenant(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        return pb.GetTenantResponse(tenant=tenant_message(tenant))

    async def SuspendTenant(
        self, request: pb.SuspendTenantRequest, context: Context
    ) -> pb.SuspendTenantResponse:
        """Suspend a tenant: its edges and tokens are refused from now on."""
        tenant = await self._change(request.name, TenantState.SUSPENDED, request.reason)
        return pb.SuspendTenantResponse(tenant=tenant_message(tenant))

    async def ResumeTenant(
        self, request: pb.ResumeTenantRequest, context: Context
    ) -> pb.ResumeTenantResponse:
        """Make a suspended tenant active again."""
        tenant = await self._change(request.name, TenantState.ACTIVE, "")
        return pb.ResumeTenantResponse(tenant=tenant_message(tenant))

    async def _change(self, name: str, target: TenantState, reason: str) -> Tenant:
        name = validation.slug("name", name)
        reason = validation.text("reason", reason, 255)
        tenant = await self._access.tenants.set_tenant_state(name, target, reason, self._access.clock())
        self._access.tenant_states.forget(name)
        return tenant
