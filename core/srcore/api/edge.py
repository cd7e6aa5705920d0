"""EdgeService: what edge cores call. Identity comes from the certificate, never the payload."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srcore.api.auth import require_edge
from srcore.api.config_sync import ConfigSync
from srcore.api.context import Context
from srcore.api.convert import duration, from_timestamp, timestamp
from srcore.domain import validation
from srcore.domain.errors import InvalidArgument, PermissionDenied
from srcore.domain.model import (
    AgentHealth,
    AgentSpec,
    ComponentStatus,
    Heartbeat,
    PollerState,
    Registration,
)
from srcore.domain.registry import RegistryService
from srcore.domain.templates import MAX_EDGE_TEMPLATES, Outcome, TemplateFormat, TemplateSource, template_spec
from srcore.ingest.stream import IngestService, ResultStream
from srcore.security.identity import PeerIdentity
from srcore.store.templates import TemplateRepository

_STATUS: dict[int, ComponentStatus] = {
    pb.COMPONENT_STATUS_UNSPECIFIED: ComponentStatus.UNKNOWN,
    pb.COMPONENT_STATUS_OK: ComponentStatus.OK,
    pb.COMPONENT_STATUS_DEGRADED: ComponentStatus.DEGRADED,
    pb.COMPONENT_STATUS_DOWN: ComponentStatus.DOWN,
}
_FORMATS = {pb.TEMPLATE_FORMAT_JSON: TemplateFormat.JSON, pb.TEMPLATE_FORMAT_TOML: TemplateFormat.TOML}
_OUTCOMES = {
    Outcome.CREATED: pb.TEMPLATE_OUTCOME_CREATED,
    Outcome.UNCHANGED: pb.TEMPLATE_OUTCOME_UNCHANGED,
    Outcome.OPERATOR_KEPT: pb.TEMPLATE_OUTCOME_OPERATOR_KEPT,
}
_ACTION = {
    PollerState.DRAINING: pb.OPERATOR_ACTION_DRAIN,
    PollerState.MAINTENANCE: pb.OPERATOR_ACTION_MAINTENANCE,
}


def _status(field: str, value: int) -> ComponentStatus:
    status = _STATUS.get(value)
    if status is None:
        raise InvalidArgument(field, f"unknown status {value}")
    return status


def _same_poller(identity: PeerIdentity, poller_id: str, tenant: str = "") -> None:
    """A payload that names another poller or tenant than the certificate is refused."""
    if poller_id != identity.poller_id:
        raise PermissionDenied(
            f"certificate is for poller {identity.poller_id!r}, request names poller {poller_id!r}"
        )
    if tenant and tenant != identity.tenant:
        raise PermissionDenied(
            f"certificate is for tenant {identity.tenant!r}, request names tenant {tenant!r}"
        )


def registration_from(request: pb.RegisterPollerRequest, tenant: str) -> Registration:
    """Validate a RegisterPollerRequest into a Registration, naming any bad field."""
    agents = []
    if len(request.agents) > validation.MAX_AGENTS:
        raise InvalidArgument("agents", f"more than {validation.MAX_AGENTS} agents")
    seen: set[str] = set()
    for i, agent in enumerate(request.agents):
        agent_id = validation.identifier(f"agents[{i}].agent_id", agent.agent_id)
        if agent_id in seen:
            raise InvalidArgument(f"agents[{i}].agent_id", f"duplicate agent id {agent_id!r}")
        seen.add(agent_id)
        agents.append(
            AgentSpec(
                agent_id=agent_id,
                version=validation.text(f"agents[{i}].version", agent.version, 64),
                capabilities=validation.capabilities(f"agents[{i}].capabilities", list(agent.capabilities)),
                address=validation.text(f"agents[{i}].address", agent.address, 255),
                labels=validation.labels(f"agents[{i}].labels", dict(agent.labels)),
            )
        )
    return Registration(
        tenant=tenant,
        poller_id=request.poller_id,
        partition=validation.slug("partition", request.partition),
        version=validation.text("version", request.version, 64),
        capabilities=validation.capabilities("capabilities", list(request.capabilities)),
        agents=tuple(agents),
        labels=validation.labels("labels", dict(request.labels)),
        hostname=validation.text("hostname", request.hostname, 255),
    )


class EdgeServicer(pb_grpc.EdgeServiceServicer):
    """Edge RPCs over the registry rules."""

    def __init__(
        self,
        registry: RegistryService,
        ingest: IngestService,
        config: ConfigSync,
        trust_domain: str,
        clock: Callable[[], datetime],
        templates: TemplateRepository,
        template_max_bytes: int,
    ) -> None:
        self._templates = templates
        self._template_max_bytes = template_max_bytes
        self._registry = registry
        self._ingest = ingest
        self._config = config
        self._trust_domain = trust_domain
        self._clock = clock

    async def RegisterPoller(
        self, request: pb.RegisterPollerRequest, context: Context
    ) -> pb.RegisterPollerResponse:
        """Register the poller named by the client certificate."""
        identity = require_edge(context, self._trust_domain)
        validation.identifier("poller_id", request.poller_id)
        if request.tenant:
            validation.slug("tenant", request.tenant)
        _same_poller(identity, request.poller_id, request.tenant)
        assert identity.tenant is not None
        session = await self._registry.register(registration_from(request, identity.tenant))
        return pb.RegisterPollerResponse(
            session_id=session.session_id,
            heartbeat_interval=duration(session.heartbeat_interval),
            heartbeat_timeout=duration(session.heartbeat_timeout),
            config_version=session.config_version,
            server_time=timestamp(session.server_time),
            tenant=session.tenant,
            core_replica=session.replica_id,
        )

    async def ReportHealth(
        self, request: pb.ReportHealthRequest, context: Context
    ) -> pb.ReportHealthResponse:
        """Record one heartbeat on the server clock."""
        identity = require_edge(context, self._trust_domain)
        validation.identifier("poller_id", request.poller_id)
        _same_poller(identity, request.poller_id)
        assert identity.tenant is not None
        if not request.session_id:
            raise InvalidArgument("session_id", "required: the session id RegisterPoller returned")
        validation.text("session_id", request.session_id, 64)
        now = self._clock()
        skew = (from_timestamp(request.sent_at) - now).total_seconds() if request.HasField("sent_at") else 0.0
        agents = tuple(
            AgentHealth(
                agent_id=validation.identifier(f"agents[{i}].agent_id", agent.agent_id),
                status=_status(f"agents[{i}].status", agent.status),
                message=validation.text(f"agents[{i}].message", agent.message, 1024),
            )
            for i, agent in enumerate(request.agents)
        )
        answer = await self._registry.heartbeat(
            Heartbeat(
                tenant=identity.tenant,
                poller_id=request.poller_id,
                session_id=request.session_id,
                status=_status("status", request.status),
                received_at=now,
                agents=agents,
                applied_config_version=validation.text(
                    "applied_config_version", request.applied_config_version, 80
                ),
                message=validation.text("message", request.message, 1024),
                clock_skew_seconds=skew,
            )
        )
        return pb.ReportHealthResponse(
            next_interval=duration(answer.next_interval),
            config_outdated=answer.config_outdated,
            config_version=answer.config_version,
            pending_action=_ACTION.get(answer.pending_action, pb.OPERATOR_ACTION_UNSPECIFIED)
            if answer.pending_action
            else pb.OPERATOR_ACTION_UNSPECIFIED,
            server_time=timestamp(answer.server_time),
            clock_skew=duration(answer.clock_skew_seconds),
        )

    async def ReportResults(
        self, request_iterator: AsyncIterator[pb.ReportResultsRequest], context: Context
    ) -> AsyncIterator[pb.ReportResultsResponse]:
        """Ingest result batches; acks follow durable commits (see docs/protocol.md)."""
        identity = require_edge(context, self._trust_domain)
        assert identity.tenant is not None and identity.poller_id is not None
        stream = ResultStream(self._ingest, identity.tenant, identity.poller_id)
        async for response in stream.responses(request_iterator):
            yield response

    async def SyncConfig(
        self, request: pb.SyncConfigRequest, context: Context
    ) -> AsyncIterator[pb.SyncConfigResponse]:
        """Stream the poller's configuration: the snapshot (or not_modified), then each change."""
        identity = require_edge(context, self._trust_domain)
        validation.identifier("poller_id", request.poller_id)
        _same_poller(identity, request.poller_id)
        assert identity.tenant is not None
        known = validation.text("known_version", request.known_version, 80)
        async for message in self._config.stream(identity.tenant, request.poller_id, known):
            yield message

    async def RegisterTemplates(
        self, request: pb.RegisterTemplatesRequest, context: Context
    ) -> pb.RegisterTemplatesResponse:
        """Register the edge's default checker templates in its tenant (never over an operator's)."""
        identity = require_edge(context, self._trust_domain)
        validation.identifier("poller_id", request.poller_id)
        _same_poller(identity, request.poller_id)
        assert identity.tenant is not None
        if len(request.templates) > MAX_EDGE_TEMPLATES:
            raise InvalidArgument("templates", f"at most {MAX_EDGE_TEMPLATES} per call")
        specs = []
        seen: set[str] = set()
        for i, default in enumerate(request.templates):
            spec = template_spec(
                default.name,
                default.checker_type,
                _FORMATS.get(default.format),
                default.body,
                self._template_max_bytes,
                prefix=f"templates[{i}].",
            )
            if spec.name in seen:
                raise InvalidArgument(f"templates[{i}].name", f"duplicate template name {spec.name!r}")
            seen.add(spec.name)
            specs.append(spec)
        registered = await self._templates.register(
            identity.tenant, specs, TemplateSource.EDGE, f"poller:{request.poller_id}"
        )
        return pb.RegisterTemplatesResponse(
            templates=[
                pb.TemplateRegistration(
                    name=r.template.name, outcome=_OUTCOMES[r.outcome], version=r.template.version
                )
                for r in registered
            ]
        )
