"""CheckService, SweepService, SourceService and AssignmentService: work items by name, scoped
to the caller's tenant. Credentials go in (sealed at once) and never come out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message

from serviceradar.admin.v1 import assignment_service_pb2 as assignment_pb
from serviceradar.admin.v1 import assignment_service_pb2_grpc as assignment_grpc
from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import check_service_pb2_grpc as check_grpc
from serviceradar.admin.v1 import source_service_pb2 as source_pb
from serviceradar.admin.v1 import source_service_pb2_grpc as source_grpc
from serviceradar.admin.v1 import sweep_service_pb2 as sweep_pb
from serviceradar.admin.v1 import sweep_service_pb2_grpc as sweep_grpc
from serviceradar.edge.v1 import config_pb2 as edge_config_pb
from srcore.api import paging
from srcore.api.context import Context
from srcore.api.convert import duration, timestamp
from srcore.dispatch.work import WorkService
from srcore.domain import validation, work
from srcore.domain.errors import InvalidArgument, NotFound
from srcore.domain.work import (
    AssignmentState,
    CheckSpec,
    CheckType,
    SourceKind,
    SourceSpec,
    SweepSpec,
    WorkItem,
    WorkKind,
)
from srcore.security.principal import caller
from srcore.store.work import Modification

CHECK_TYPES = {t: getattr(edge_config_pb, f"CHECK_TYPE_{t.name}") for t in CheckType}
SOURCE_KINDS = {k: getattr(edge_config_pb, f"SOURCE_KIND_{k.name}") for k in SourceKind}
ASSIGNMENT_STATES = {s: getattr(assignment_pb, f"ASSIGNMENT_STATE_{s.name}") for s in AssignmentState}
WORK_KINDS = {k: getattr(assignment_pb, f"WORK_KIND_{k.name}") for k in WorkKind}
_CHECK_TYPE_FROM_PB = {v: k for k, v in CHECK_TYPES.items()}
_SOURCE_KIND_FROM_PB = {v: k for k, v in SOURCE_KINDS.items()}
_STATE_FROM_PB = {v: k for k, v in ASSIGNMENT_STATES.items()}
_KIND_FROM_PB = {v: k for k, v in WORK_KINDS.items()}

CREDENTIALS_PATH = "credentials"

E = TypeVar("E")
M = TypeVar("M", bound=Message)


def _enum(field: str, value: int, known: Mapping[int, E]) -> E | None:
    """The domain value of a protobuf enum; None when unset, INVALID_ARGUMENT when unknown."""
    if value == 0:
        return None
    found = known.get(value)
    if found is None:
        raise InvalidArgument(field, f"unknown value {value}")
    return found


def _seconds(message: Message, field: str) -> float | None:
    """A Duration field in seconds; None when unset."""
    if not message.HasField(field):
        return None
    value: duration_pb2.Duration = getattr(message, field)
    return value.seconds + value.nanos / 1e9


# specs: protobuf -> domain


def check_spec(message: check_pb.CheckSpec, prefix: str = "spec") -> tuple[str, CheckSpec]:
    """The partition and validated check spec a CheckSpec message describes."""
    partition = validation.slug(f"{prefix}.partition", message.partition)
    spec = work.check_spec(
        prefix,
        _enum(f"{prefix}.check_type", message.check_type, _CHECK_TYPE_FROM_PB),
        message.target,
        message.port,
        _seconds(message, "interval"),
        _seconds(message, "timeout"),
        message.agent_id,
        dict(message.settings),
    )
    return partition, spec


def sweep_spec(message: sweep_pb.SweepSpec, prefix: str = "spec") -> tuple[str, SweepSpec]:
    """The partition and validated sweep spec a SweepSpec message describes."""
    partition = validation.slug(f"{prefix}.partition", message.partition)
    spec = work.sweep_spec(
        prefix,
        list(message.cidrs),
        list(message.ports),
        _seconds(message, "icmp_interval") or 0.0,
        _seconds(message, "tcp_interval") or 0.0,
        _seconds(message, "timeout"),
    )
    return partition, spec


def source_spec(
    message: source_pb.SourceSpec, credential_names: tuple[str, ...], prefix: str = "spec"
) -> tuple[str, SourceSpec]:
    """The partition and validated source spec a SourceSpec message describes."""
    partition = validation.slug(f"{prefix}.partition", message.partition)
    spec = work.source_spec(
        prefix,
        _enum(f"{prefix}.kind", message.kind, _SOURCE_KIND_FROM_PB),
        message.endpoint,
        _seconds(message, "sync_interval"),
        dict(message.settings),
        credential_names,
    )
    return partition, spec


# specs: domain -> protobuf


def check_spec_message(partition: str, spec: CheckSpec) -> check_pb.CheckSpec:
    """The CheckSpec message of a check."""
    return check_pb.CheckSpec(
        partition=partition,
        check_type=CHECK_TYPES[spec.check_type],
        target=spec.target,
        port=spec.port,
        interval=duration(spec.interval),
        timeout=duration(spec.timeout),
        agent_id=spec.agent_id,
        settings=spec.settings,
    )


def sweep_spec_message(partition: str, spec: SweepSpec) -> sweep_pb.SweepSpec:
    """The SweepSpec message of a sweep group."""
    return sweep_pb.SweepSpec(
        partition=partition,
        cidrs=spec.cidrs,
        ports=spec.ports,
        icmp_interval=duration(spec.icmp_interval),
        tcp_interval=duration(spec.tcp_interval),
        timeout=duration(spec.timeout),
    )


def source_spec_message(partition: str, spec: SourceSpec) -> source_pb.SourceSpec:
    """The SourceSpec message of a source (it has no credentials field)."""
    return source_pb.SourceSpec(
        partition=partition,
        kind=SOURCE_KINDS[spec.source_kind],
        endpoint=spec.endpoint,
        sync_interval=duration(spec.sync_interval),
        settings=spec.settings,
    )


def assignment_message(item: WorkItem) -> assignment_pb.Assignment:
    """Where an item runs."""
    return assignment_pb.Assignment(
        state=ASSIGNMENT_STATES[item.assignment.state],
        poller_id=item.assignment.poller_id,
        reason=item.assignment.reason,
        since=timestamp(item.assignment.since),
        capability=item.capability,
    )


def check_message(item: WorkItem) -> check_pb.ServiceCheck:
    """The admin view of a check."""
    assert isinstance(item.spec, CheckSpec)
    return check_pb.ServiceCheck(
        tenant=item.tenant,
        name=item.name,
        check_id=item.item_id,
        spec=check_spec_message(item.partition, item.spec),
        enabled=item.enabled,
        assignment=assignment_message(item),
        created_at=timestamp(item.created_at),
        updated_at=timestamp(item.updated_at),
        revision=item.revision,
    )


def sweep_message(item: WorkItem) -> sweep_pb.SweepGroup:
    """The admin view of a sweep group."""
    assert isinstance(item.spec, SweepSpec)
    return sweep_pb.SweepGroup(
        tenant=item.tenant,
        name=item.name,
        sweep_id=item.item_id,
        spec=sweep_spec_message(item.partition, item.spec),
        enabled=item.enabled,
        assignment=assignment_message(item),
        created_at=timestamp(item.created_at),
        updated_at=timestamp(item.updated_at),
        revision=item.revision,
    )


def source_message(item: WorkItem) -> source_pb.IntegrationSource:
    """The admin view of a source: credential names, never values."""
    assert isinstance(item.spec, SourceSpec)
    return source_pb.IntegrationSource(
        tenant=item.tenant,
        name=item.name,
        source_id=item.item_id,
        spec=source_spec_message(item.partition, item.spec),
        enabled=item.enabled,
        assignment=assignment_message(item),
        credential_names=item.spec.credential_names,
        credentials_updated_at=timestamp(item.credentials_updated_at),
        created_at=timestamp(item.created_at),
        updated_at=timestamp(item.updated_at),
        revision=item.revision,
    )


def merged_spec(
    current: M, given: M, mask: field_mask_pb2.FieldMask, extra: frozenset[str] = frozenset()
) -> M:
    """`current` with the fields `mask` names taken from `given`; all of `given` for an empty
    mask. Paths in `extra` are allowed and left to the caller (e.g. "credentials")."""
    paths = [p for p in mask.paths if p not in extra]
    known = current.DESCRIPTOR.fields_by_name
    for i, path in enumerate(mask.paths):
        if path not in known and path not in extra:
            choices = ", ".join([*known, *sorted(extra)])
            raise InvalidArgument(f"update_mask.paths[{i}]", f"unknown field {path!r}: one of {choices}")
    if not mask.paths:
        return given
    merged = type(current)()
    merged.CopyFrom(current)
    field_mask_pb2.FieldMask(paths=paths).MergeMessage(
        given, merged, replace_message_field=True, replace_repeated_field=True
    )
    return merged


class _Work:
    """What the three item services share: tenant scoping, lookups and listing."""

    kind: WorkKind

    def __init__(self, service: WorkService) -> None:
        self._service = service

    async def _get(self, tenant: str, name: str) -> WorkItem:
        tenant = caller().tenant_for(tenant)
        name = validation.identifier("name", name)
        item = await self._service.repository.get(tenant, self.kind, name)
        if item is None:
            raise NotFound(f"{self.kind.value} {name!r} not found")
        return item

    async def _list(
        self, tenant: str, partition: str, poller_id: str, state: int, page_size: int, page_token: str
    ) -> tuple[list[WorkItem], str]:
        return await list_items(
            self._service, self.kind, tenant, partition, poller_id, state, page_size, page_token
        )

    async def _enable(self, tenant: str, name: str, enabled: bool) -> WorkItem:
        tenant = caller().tenant_for(tenant)
        return await self._service.set_enabled(
            tenant, self.kind, validation.identifier("name", name), enabled
        )

    async def _delete(self, tenant: str, name: str) -> None:
        tenant = caller().tenant_for(tenant)
        await self._service.delete(tenant, self.kind, validation.identifier("name", name))

    async def _update(self, tenant: str, name: str, change: Callable[[WorkItem], Modification]) -> WorkItem:
        tenant = caller().tenant_for(tenant)
        return await self._service.modify(tenant, self.kind, validation.identifier("name", name), change)


async def list_items(
    service: WorkService,
    kind: WorkKind | None,
    tenant: str,
    partition: str,
    poller_id: str,
    state: int,
    page_size: int,
    page_token: str,
) -> tuple[list[WorkItem], str]:
    """One page of items and the token of the next ("" on the last page)."""
    scope = caller().scope(tenant, all_tenants=True)
    size = paging.page_size(page_size)
    after = paging.text_key(page_token, 3)
    found = await service.repository.list_items(
        scope,
        kind,
        validation.slug("partition", partition) if partition else None,
        validation.identifier("poller_id", poller_id) if poller_id else None,
        _enum("state", state, _STATE_FROM_PB),
        size + 1,
        (after[0], after[1], after[2]) if after else None,
    )
    page = found[:size]
    token = (
        paging.encode_token([page[-1].tenant, page[-1].kind.value, page[-1].name])
        if len(found) > size
        else ""
    )
    return page, token


class CheckServicer(_Work, check_grpc.CheckServiceServicer):
    """Service checks."""

    kind = WorkKind.CHECK

    async def CreateCheck(
        self, request: check_pb.CreateCheckRequest, context: Context
    ) -> check_pb.CreateCheckResponse:
        """Create a check."""
        tenant = caller().tenant_for(request.tenant)
        name = validation.identifier("name", request.name)
        partition, spec = check_spec(request.spec)
        item = await self._service.create(tenant, self.kind, name, partition, spec, not request.disabled)
        return check_pb.CreateCheckResponse(check=check_message(item))

    async def ListChecks(
        self, request: check_pb.ListChecksRequest, context: Context
    ) -> check_pb.ListChecksResponse:
        """One page of checks."""
        items, token = await self._list(
            request.tenant,
            request.partition,
            request.poller_id,
            request.state,
            request.page_size,
            request.page_token,
        )
        return check_pb.ListChecksResponse(checks=[check_message(i) for i in items], next_page_token=token)

    async def GetCheck(
        self, request: check_pb.GetCheckRequest, context: Context
    ) -> check_pb.GetCheckResponse:
        """One check."""
        return check_pb.GetCheckResponse(check=check_message(await self._get(request.tenant, request.name)))

    async def UpdateCheck(
        self, request: check_pb.UpdateCheckRequest, context: Context
    ) -> check_pb.UpdateCheckResponse:
        """Change a check's spec."""

        def change(before: WorkItem) -> Modification:
            assert isinstance(before.spec, CheckSpec)
            current = check_spec_message(before.partition, before.spec)
            partition, spec = check_spec(merged_spec(current, request.spec, request.update_mask))
            return Modification(partition, before.enabled, spec)

        item = await self._update(request.tenant, request.name, change)
        return check_pb.UpdateCheckResponse(check=check_message(item))

    async def EnableCheck(
        self, request: check_pb.EnableCheckRequest, context: Context
    ) -> check_pb.EnableCheckResponse:
        """Enable a check."""
        return check_pb.EnableCheckResponse(
            check=check_message(await self._enable(request.tenant, request.name, True))
        )

    async def DisableCheck(
        self, request: check_pb.DisableCheckRequest, context: Context
    ) -> check_pb.DisableCheckResponse:
        """Disable a check."""
        item = await self._enable(request.tenant, request.name, False)
        return check_pb.DisableCheckResponse(check=check_message(item))

    async def DeleteCheck(
        self, request: check_pb.DeleteCheckRequest, context: Context
    ) -> check_pb.DeleteCheckResponse:
        """Delete a check."""
        await self._delete(request.tenant, request.name)
        return check_pb.DeleteCheckResponse()


class SweepServicer(_Work, sweep_grpc.SweepServiceServicer):
    """Sweep groups."""

    kind = WorkKind.SWEEP

    async def CreateSweep(
        self, request: sweep_pb.CreateSweepRequest, context: Context
    ) -> sweep_pb.CreateSweepResponse:
        """Create a sweep group."""
        tenant = caller().tenant_for(request.tenant)
        name = validation.identifier("name", request.name)
        partition, spec = sweep_spec(request.spec)
        item = await self._service.create(tenant, self.kind, name, partition, spec, not request.disabled)
        return sweep_pb.CreateSweepResponse(sweep=sweep_message(item))

    async def ListSweeps(
        self, request: sweep_pb.ListSweepsRequest, context: Context
    ) -> sweep_pb.ListSweepsResponse:
        """One page of sweep groups."""
        items, token = await self._list(
            request.tenant,
            request.partition,
            request.poller_id,
            request.state,
            request.page_size,
            request.page_token,
        )
        return sweep_pb.ListSweepsResponse(sweeps=[sweep_message(i) for i in items], next_page_token=token)

    async def GetSweep(
        self, request: sweep_pb.GetSweepRequest, context: Context
    ) -> sweep_pb.GetSweepResponse:
        """One sweep group."""
        return sweep_pb.GetSweepResponse(sweep=sweep_message(await self._get(request.tenant, request.name)))

    async def UpdateSweep(
        self, request: sweep_pb.UpdateSweepRequest, context: Context
    ) -> sweep_pb.UpdateSweepResponse:
        """Change a sweep group's spec."""

        def change(before: WorkItem) -> Modification:
            assert isinstance(before.spec, SweepSpec)
            current = sweep_spec_message(before.partition, before.spec)
            partition, spec = sweep_spec(merged_spec(current, request.spec, request.update_mask))
            return Modification(partition, before.enabled, spec)

        item = await self._update(request.tenant, request.name, change)
        return sweep_pb.UpdateSweepResponse(sweep=sweep_message(item))

    async def EnableSweep(
        self, request: sweep_pb.EnableSweepRequest, context: Context
    ) -> sweep_pb.EnableSweepResponse:
        """Enable a sweep group."""
        return sweep_pb.EnableSweepResponse(
            sweep=sweep_message(await self._enable(request.tenant, request.name, True))
        )

    async def DisableSweep(
        self, request: sweep_pb.DisableSweepRequest, context: Context
    ) -> sweep_pb.DisableSweepResponse:
        """Disable a sweep group."""
        item = await self._enable(request.tenant, request.name, False)
        return sweep_pb.DisableSweepResponse(sweep=sweep_message(item))

    async def DeleteSweep(
        self, request: sweep_pb.DeleteSweepRequest, context: Context
    ) -> sweep_pb.DeleteSweepResponse:
        """Delete a sweep group."""
        await self._delete(request.tenant, request.name)
        return sweep_pb.DeleteSweepResponse()


class SourceServicer(_Work, source_grpc.SourceServiceServicer):
    """Integration sources; credentials are write-only."""

    kind = WorkKind.SOURCE

    async def CreateSource(
        self, request: source_pb.CreateSourceRequest, context: Context
    ) -> source_pb.CreateSourceResponse:
        """Create a source, sealing its credentials."""
        tenant = caller().tenant_for(request.tenant)
        name = validation.identifier("name", request.name)
        credentials = work.credentials("credentials", dict(request.credentials))
        partition, spec = source_spec(request.spec, tuple(credentials))
        item = await self._service.create(
            tenant, self.kind, name, partition, spec, not request.disabled, credentials
        )
        return source_pb.CreateSourceResponse(source=source_message(item))

    async def ListSources(
        self, request: source_pb.ListSourcesRequest, context: Context
    ) -> source_pb.ListSourcesResponse:
        """One page of sources."""
        items, token = await self._list(
            request.tenant,
            request.partition,
            request.poller_id,
            request.state,
            request.page_size,
            request.page_token,
        )
        return source_pb.ListSourcesResponse(
            sources=[source_message(i) for i in items], next_page_token=token
        )

    async def GetSource(
        self, request: source_pb.GetSourceRequest, context: Context
    ) -> source_pb.GetSourceResponse:
        """One source."""
        return source_pb.GetSourceResponse(
            source=source_message(await self._get(request.tenant, request.name))
        )

    async def UpdateSource(
        self, request: source_pb.UpdateSourceRequest, context: Context
    ) -> source_pb.UpdateSourceResponse:
        """Change a source's spec and, when given, its credentials."""
        replace = bool(request.credentials) or CREDENTIALS_PATH in request.update_mask.paths
        credentials = work.credentials("credentials", dict(request.credentials)) if replace else {}
        tenant = caller().tenant_for(request.tenant)
        vault = self._service.vault

        def change(before: WorkItem) -> Modification:
            assert isinstance(before.spec, SourceSpec)
            current = source_spec_message(before.partition, before.spec)
            given = merged_spec(current, request.spec, request.update_mask, frozenset({CREDENTIALS_PATH}))
            names = tuple(credentials) if replace else before.spec.credential_names
            partition, spec = source_spec(given, names)
            if not replace:
                return Modification(partition, before.enabled, spec)
            sealed = vault.seal(tenant, before.item_id, credentials) if credentials else None
            return Modification(
                partition, before.enabled, spec, credentials=sealed, clear_credentials=not credentials
            )

        item = await self._update(tenant, request.name, change)
        return source_pb.UpdateSourceResponse(source=source_message(item))

    async def EnableSource(
        self, request: source_pb.EnableSourceRequest, context: Context
    ) -> source_pb.EnableSourceResponse:
        """Enable a source."""
        item = await self._enable(request.tenant, request.name, True)
        return source_pb.EnableSourceResponse(source=source_message(item))

    async def DisableSource(
        self, request: source_pb.DisableSourceRequest, context: Context
    ) -> source_pb.DisableSourceResponse:
        """Disable a source."""
        item = await self._enable(request.tenant, request.name, False)
        return source_pb.DisableSourceResponse(source=source_message(item))

    async def DeleteSource(
        self, request: source_pb.DeleteSourceRequest, context: Context
    ) -> source_pb.DeleteSourceResponse:
        """Delete a source and its sealed credentials."""
        await self._delete(request.tenant, request.name)
        return source_pb.DeleteSourceResponse()


class AssignmentServicer(assignment_grpc.AssignmentServiceServicer):
    """Where every item runs, or why it waits."""

    def __init__(self, service: WorkService) -> None:
        self._service = service

    async def ListAssignments(
        self, request: assignment_pb.ListAssignmentsRequest, context: Context
    ) -> assignment_pb.ListAssignmentsResponse:
        """One page of assignments."""
        kind = _enum("kind", request.kind, _KIND_FROM_PB)
        items, token = await list_items(
            self._service,
            kind,
            request.tenant,
            request.partition,
            request.poller_id,
            request.state,
            request.page_size,
            request.page_token,
        )
        return assignment_pb.ListAssignmentsResponse(
            assignments=[
                assignment_pb.WorkAssignment(
                    tenant=i.tenant,
                    kind=WORK_KINDS[i.kind],
                    name=i.name,
                    item_id=i.item_id,
                    partition=i.partition,
                    assignment=assignment_message(i),
                )
                for i in items
            ],
            next_page_token=token,
        )
