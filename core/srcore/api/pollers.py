"""PollerService: list, inspect and steer pollers, scoped to what the caller may see."""

from __future__ import annotations

import base64

from serviceradar.admin.v1 import poller_service_pb2 as pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as pb_grpc
from srcore.api.context import Context
from srcore.api.convert import duration, timestamp
from srcore.dispatch.drain import DrainService
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument, NotFound
from srcore.domain.liveness import LivenessStore, MaintenanceService, TransitionRecord
from srcore.domain.model import AgentState, Poller, PollerState
from srcore.security.principal import Principal, caller
from srcore.store.pollers import PollerRepository

POLLER_STATES = {state: getattr(pb, f"POLLER_STATE_{state.name}") for state in PollerState}
AGENT_STATES = {state: getattr(pb, f"AGENT_STATE_{state.name}") for state in AgentState}
_STATE_FROM_PB = {value: state for state, value in POLLER_STATES.items()}
DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_HISTORY = 20
MAX_HISTORY = 1000
MAX_REASON = 200


def poller_message(poller: Poller) -> pb.Poller:
    """The admin view of a poller."""
    return pb.Poller(
        tenant=poller.tenant,
        partition=poller.partition,
        poller_id=poller.poller_id,
        state=POLLER_STATES[poller.state],
        version=poller.version,
        capabilities=poller.capabilities,
        labels=poller.labels,
        hostname=poller.hostname,
        registered_at=timestamp(poller.registered_at),
        last_seen=timestamp(poller.last_seen),
        serving_replica=poller.serving_replica,
        desired_config_version=poller.desired_config_version,
        applied_config_version=poller.applied_config_version,
        clock_skew=duration(poller.clock_skew_seconds),
        message=poller.message,
        agent_count=poller.agent_count,
        assigned_work=poller.assigned_work,
        agents=[
            pb.Agent(
                agent_id=a.agent_id,
                state=AGENT_STATES[a.state],
                version=a.version,
                capabilities=a.capabilities,
                address=a.address,
                message=a.message,
                last_seen=timestamp(a.last_seen),
                labels=a.labels,
            )
            for a in poller.agents
        ],
    )


def transition_message(record: TransitionRecord) -> pb.PollerTransition:
    """One entry of a poller's state history."""
    t = record.transition
    return pb.PollerTransition(
        from_state=POLLER_STATES[PollerState(t.from_state)],
        to_state=POLLER_STATES[PollerState(t.to_state)],
        reason=t.reason,
        at=timestamp(t.at),
        replica=record.replica,
        fencing_token=record.fencing_token,
    )


def scoped_tenant(principal: Principal, requested: str, default_all: bool) -> str | None:
    """The tenant a call is limited to (see `Principal.scope`): tenant principals only ever get
    their own, and None means "all tenants" (platform principals listing without a filter)."""
    return principal.scope(requested, all_tenants=default_all)


def _encode_token(tenant: str, poller_id: str) -> str:
    return base64.urlsafe_b64encode(f"{tenant}\0{poller_id}".encode()).decode()


def _decode_token(token: str) -> tuple[str, str]:
    try:
        tenant, poller_id = base64.urlsafe_b64decode(token.encode()).decode().split("\0")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", "not a token this server issued") from exc
    return tenant, poller_id


class PollerServicer(pb_grpc.PollerServiceServicer):
    """Reads pollers from the store; state changes go through the domain services."""

    def __init__(
        self,
        repository: PollerRepository,
        liveness: LivenessStore,
        maintenance: MaintenanceService,
        drains: DrainService,
    ) -> None:
        self._repository = repository
        self._liveness = liveness
        self._maintenance = maintenance
        self._drains = drains

    async def ListPollers(self, request: pb.ListPollersRequest, context: Context) -> pb.ListPollersResponse:
        """One page of pollers."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        partition = validation.slug("partition", request.partition) if request.partition else None
        state = None
        if request.state:
            state = _STATE_FROM_PB.get(request.state)
            if state is None:
                raise InvalidArgument("state", f"unknown poller state {request.state}")
        if request.page_size > MAX_PAGE:
            raise InvalidArgument("page_size", f"at most {MAX_PAGE}")
        size = request.page_size or DEFAULT_PAGE
        after = _decode_token(request.page_token) if request.page_token else None
        pollers = await self._repository.list_pollers(tenant, partition, state, size + 1, after)
        more = len(pollers) > size
        pollers = pollers[:size]
        return pb.ListPollersResponse(
            pollers=[poller_message(p) for p in pollers],
            next_page_token=_encode_token(pollers[-1].tenant, pollers[-1].poller_id) if more else "",
        )

    async def GetPoller(self, request: pb.GetPollerRequest, context: Context) -> pb.GetPollerResponse:
        """One poller with its agents and its latest transitions."""
        poller_id = validation.identifier("poller_id", request.poller_id)
        if request.history_limit > MAX_HISTORY:
            raise InvalidArgument("history_limit", f"at most {MAX_HISTORY}")
        tenant = caller().tenant_for(request.tenant)
        poller = await self._repository.get_poller(tenant, poller_id, with_agents=True)
        if poller is None:
            raise NotFound(f"poller {poller_id!r} not found")
        history = await self._liveness.history(tenant, poller_id, request.history_limit or DEFAULT_HISTORY)
        return pb.GetPollerResponse(
            poller=poller_message(poller), history=[transition_message(r) for r in history]
        )

    async def SetMaintenance(
        self, request: pb.SetMaintenanceRequest, context: Context
    ) -> pb.SetMaintenanceResponse:
        """Start or end a poller's maintenance."""
        poller_id = validation.identifier("poller_id", request.poller_id)
        reason = validation.text("reason", request.reason, MAX_REASON)
        tenant = caller().tenant_for(request.tenant)
        poller = await self._maintenance.set_maintenance(tenant, poller_id, request.enabled, reason)
        # A poller under maintenance runs nothing: its work moves, and comes back after.
        await self._drains.redispatch(tenant, poller.partition, rebalance=not request.enabled)
        return pb.SetMaintenanceResponse(poller=poller_message(poller))

    async def DrainPoller(self, request: pb.DrainPollerRequest, context: Context) -> pb.DrainPollerResponse:
        """Drain a poller: its work moves to the other pollers of its partition."""
        poller_id = validation.identifier("poller_id", request.poller_id)
        reason = validation.text("reason", request.reason, MAX_REASON)
        tenant = caller().tenant_for(request.tenant)
        poller = await self._drains.drain(tenant, poller_id, reason)
        return pb.DrainPollerResponse(poller=poller_message(poller))

    async def ResumePoller(
        self, request: pb.ResumePollerRequest, context: Context
    ) -> pb.ResumePollerResponse:
        """End a poller's drain: it is eligible for work again."""
        poller_id = validation.identifier("poller_id", request.poller_id)
        reason = validation.text("reason", request.reason, MAX_REASON)
        tenant = caller().tenant_for(request.tenant)
        poller = await self._drains.resume(tenant, poller_id, reason)
        return pb.ResumePollerResponse(poller=poller_message(poller))
