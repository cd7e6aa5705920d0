"""SyncConfig: a poller's configuration, then every change of it, pushed.

The stream registers with the replica's ConfigHub before it reads the configuration, so a
change committed in between wakes it. Woken, it reads the store and sends the new snapshot if
its version differs from the last one sent. Every `keepalive` seconds without a change it
recomputes the version from the item digests (a cheap read: the fallback for a lost signal)
and sends either the new snapshot or a keepalive. Credentials are decrypted here only: into
the stream of the poller the certificate names, which the store says runs the source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from prometheus_client import Counter, Gauge

from serviceradar.edge.v1 import config_pb2 as config_pb
from serviceradar.edge.v1 import edge_service_pb2 as pb
from srcore.api.convert import duration, timestamp
from srcore.api.work import CHECK_TYPES, SOURCE_KINDS
from srcore.dispatch.hub import ConfigHub
from srcore.domain.config import poller_config_version
from srcore.domain.errors import FailedPrecondition, Unavailable
from srcore.domain.work import CheckSpec, SourceSpec, SweepSpec, WorkItem
from srcore.security.credentials import CredentialVault
from srcore.store.pollers import PollerRepository
from srcore.store.work import AssignedWork, WorkRepository

SHUTTING_DOWN = "this core replica is shutting down: reconnect (to another replica)"

SYNC_STREAMS = Gauge("srcore_sync_config_streams", "SyncConfig streams open on this replica.")
SYNC_PUSHES = Counter("srcore_sync_config_messages_total", "SyncConfig messages sent, by kind.", ["kind"])


class ConfigSync:
    """Builds poller configurations and streams them (see the module docstring)."""

    def __init__(
        self,
        work: WorkRepository,
        pollers: PollerRepository,
        vault: CredentialVault,
        hub: ConfigHub,
        clock: Callable[[], datetime],
        heartbeat_interval: float,
        keepalive_interval: float,
    ) -> None:
        self._work = work
        self._pollers = pollers
        self._vault = vault
        self._hub = hub
        self._clock = clock
        self._interval = heartbeat_interval
        self._keepalive_interval = keepalive_interval

    async def snapshot(self, tenant: str, poller_id: str) -> tuple[str, list[AssignedWork]]:
        """The poller's work now and its configuration version, from one read of the store."""
        assigned = await self._work.assigned_work(tenant, poller_id)
        version = poller_config_version(
            self._interval, [(a.item.kind.value, a.item.item_id, a.digest) for a in assigned]
        )
        return version, assigned

    def configuration(self, assigned: list[AssignedWork]) -> config_pb.PollerConfig:
        """The configuration message of a snapshot's work (credentials opened here); built
        only when it is sent."""
        config = config_pb.PollerConfig(heartbeat_interval=duration(self._interval))
        for entry in assigned:
            self._add(config, entry)
        return config

    async def version(self, tenant: str, poller_id: str) -> str:
        """The version of the poller's configuration now, from the item digests only."""
        return poller_config_version(self._interval, await self._pollers.config_entries(tenant, poller_id))

    def _add(self, config: config_pb.PollerConfig, entry: AssignedWork) -> None:
        item: WorkItem = entry.item
        spec = item.spec
        if isinstance(spec, CheckSpec):
            config.checks.append(
                config_pb.CheckAssignment(
                    check_id=item.item_id,
                    name=item.name,
                    check_type=CHECK_TYPES[spec.check_type],
                    target=spec.target,
                    port=spec.port,
                    interval=duration(spec.interval),
                    timeout=duration(spec.timeout),
                    agent_id=spec.agent_id,
                    settings=spec.settings,
                )
            )
        elif isinstance(spec, SweepSpec):
            config.sweeps.append(
                config_pb.SweepAssignment(
                    sweep_id=item.item_id,
                    name=item.name,
                    cidrs=spec.cidrs,
                    ports=spec.ports,
                    icmp_interval=duration(spec.icmp_interval),
                    tcp_interval=duration(spec.tcp_interval),
                    timeout=duration(spec.timeout),
                )
            )
        else:
            assert isinstance(spec, SourceSpec)
            credentials = self._vault.open(item.tenant, item.item_id, entry.sealed) if entry.sealed else {}
            config.sources.append(
                config_pb.SourceAssignment(
                    source_id=item.item_id,
                    name=item.name,
                    kind=SOURCE_KINDS[spec.source_kind],
                    endpoint=spec.endpoint,
                    credentials=credentials,
                    sync_interval=duration(spec.sync_interval),
                    settings=spec.settings,
                )
            )

    def _config(self, version: str, config: config_pb.PollerConfig) -> pb.SyncConfigResponse:
        SYNC_PUSHES.labels("config").inc()
        return pb.SyncConfigResponse(version=version, server_time=timestamp(self._clock()), config=config)

    def _not_modified(self, version: str) -> pb.SyncConfigResponse:
        SYNC_PUSHES.labels("not_modified").inc()
        return pb.SyncConfigResponse(
            version=version, server_time=timestamp(self._clock()), not_modified=pb.NotModified()
        )

    def _keepalive(self, version: str) -> pb.SyncConfigResponse:
        SYNC_PUSHES.labels("keepalive").inc()
        return pb.SyncConfigResponse(
            version=version, server_time=timestamp(self._clock()), keepalive=pb.Keepalive()
        )

    async def stream(
        self, tenant: str, poller_id: str, known_version: str
    ) -> AsyncIterator[pb.SyncConfigResponse]:
        """The SyncConfig stream of one poller (identity already checked)."""
        if await self._pollers.get_poller(tenant, poller_id) is None:
            raise FailedPrecondition(f"poller {poller_id!r} is not registered: call RegisterPoller first")
        SYNC_STREAMS.inc()
        try:
            with self._hub.watch(tenant, poller_id) as watch:
                if watch.closing:
                    raise Unavailable(SHUTTING_DOWN)
                last, assigned = await self.snapshot(tenant, poller_id)
                if last == known_version:
                    yield self._not_modified(last)
                else:
                    yield self._config(last, self.configuration(assigned))
                while True:
                    woken = await watch.wait(self._keepalive_interval)
                    if watch.closing:
                        raise Unavailable(SHUTTING_DOWN)
                    if not woken and await self.version(tenant, poller_id) == last:
                        yield self._keepalive(last)
                        continue
                    version, assigned = await self.snapshot(tenant, poller_id)
                    if version != last:
                        last = version
                        yield self._config(version, self.configuration(assigned))
                    elif not woken:
                        yield self._keepalive(last)
        finally:
            SYNC_STREAMS.dec()
