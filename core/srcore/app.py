"""Wiring: builds the adapters from settings, serves gRPC, runs background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

import srcore
from serviceradar.admin.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    batch_service_pb2,
    batch_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    package_service_pb2,
    package_service_pb2_grpc,
    partition_service_pb2,
    partition_service_pb2_grpc,
    poller_service_pb2,
    poller_service_pb2_grpc,
    result_service_pb2,
    result_service_pb2_grpc,
    tenant_service_pb2,
    tenant_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from serviceradar.edge.v1 import edge_service_pb2, edge_service_pb2_grpc
from srcore.api.access import Access
from srcore.api.audit import AuditServicer
from srcore.api.authz import AuthzInterceptor
from srcore.api.batches import BatchServicer
from srcore.api.cluster import ClusterServicer
from srcore.api.edge import EdgeServicer
from srcore.api.events import EventServicer
from srcore.api.interceptors import ServerInterceptor
from srcore.api.packages import PackageServicer
from srcore.api.partitions import PartitionServicer
from srcore.api.pollers import PollerServicer
from srcore.api.reflection import DocumentedReflection
from srcore.api.results import ResultServicer
from srcore.api.tenants import TenantServicer
from srcore.api.tokens import TokenServicer
from srcore.coord.local import LocalCoordinator
from srcore.domain.coordination import Coordinator, ReplicaInfo
from srcore.domain.ingest import Budget, IngestLimits
from srcore.domain.registry import RegistryService
from srcore.events.config import EventConfig
from srcore.events.runtime import EventsRuntime
from srcore.ingest.projector import Projector
from srcore.ingest.stream import IngestService
from srcore.ingest.writer import BatchingWriter
from srcore.observability.metrics import HEARTBEAT_FLUSHES, serve_metrics
from srcore.security.pki import ensure_dev_pki
from srcore.security.tls import load_pem, server_credentials
from srcore.settings import Settings
from srcore.store.database import Database, sqlite_url
from srcore.store.ingest import IngestStore
from srcore.store.pollers import PollerRepository

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    edge_service_pb2.DESCRIPTOR.services_by_name["EdgeService"].full_name,
    cluster_service_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
    poller_service_pb2.DESCRIPTOR.services_by_name["PollerService"].full_name,
    batch_service_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name,
    result_service_pb2.DESCRIPTOR.services_by_name["ResultService"].full_name,
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    tenant_service_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
    partition_service_pb2.DESCRIPTOR.services_by_name["PartitionService"].full_name,
    token_service_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
    package_service_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)
HEALTH_PROBE_INTERVAL = 2.0


def utcnow() -> datetime:
    """The server clock, which decides liveness."""
    return datetime.now(UTC)


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel options: message size limit and a keepalive policy Go clients live with.

    grpc-go clients commonly ping every 10-30 s, also without active calls; a stricter
    server policy answers them with GOAWAY too_many_pings and drops their streams.
    """
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes the server listens with."""

    cert: bytes
    key: bytes
    client_ca: bytes


def tls_material(settings: Settings) -> TlsMaterial:
    """Operator-provided TLS files, or the development PKI made once under the data dir."""
    if settings.embedded_tls:
        pki = ensure_dev_pki(settings.data_dir / "pki", trust_domain=settings.trust_domain)
        return TlsMaterial(load_pem(pki.server_cert), load_pem(pki.server_key), load_pem(pki.ca_cert))
    return TlsMaterial(
        load_pem(Path(settings.tls_cert)),
        load_pem(Path(settings.tls_key)),
        load_pem(Path(settings.tls_client_ca)),
    )


def build_coordinator(settings: Settings) -> Coordinator:
    """etcd when endpoints are configured, otherwise the in-process adapter."""
    return LocalCoordinator()


def build_ingest(settings: Settings, db: Database) -> IngestService:
    """The ReportResults pipeline: limits, budget, ledger store and batching writer."""
    limits = IngestLimits(
        max_results_per_chunk=settings.ingest_max_results_per_chunk,
        max_chunks_per_batch=settings.ingest_max_chunks_per_batch,
        credit_window=settings.ingest_credit_window,
        resume_window_seconds=settings.ingest_resume_window,
        global_budget_rows=settings.ingest_global_budget,
        tenant_budget_rows=settings.ingest_tenant_budget,
    )
    budget = Budget(limits)
    store = IngestStore(db)
    # SQLite has one writer at a time; PostgreSQL overlaps one flush's commit with the next's build.
    writers = settings.ingest_writers or (2 if db.is_postgres else 1)
    projector = Projector(db)
    writer = BatchingWriter(
        store,
        budget,
        utcnow,
        settings.ingest_flush_results,
        settings.ingest_flush_delay,
        writers,
        on_flush=projector.notify,
    )
    return IngestService(store, writer, budget, limits, utcnow, projector)


class CoreApp:
    """One replica: gRPC server, store, coordination and background jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.replica_id = (
            settings.replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(
            settings.database_url or sqlite_url(settings.data_dir), settings.database_pool_size
        )
        self.coordinator = build_coordinator(settings)
        self.pollers = PollerRepository(self.db)
        self.events = EventsRuntime(
            self.db, self.coordinator, EventConfig.from_settings(settings), self.replica_id
        )
        self.ingest = build_ingest(settings, self.db)
        self.registry = RegistryService(
            store=self.pollers,
            registry=self.coordinator.registry,
            clock=utcnow,
            replica_id=self.replica_id,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            fencing_token=self._fencing_token,
        )
        self.access = Access(self.db, settings, utcnow, self.replica_id, self._fencing_token)
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.admin_port = 0
        self.metrics_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def _fencing_token(self) -> int:
        leader = self.coordinator.leader()
        return leader.fencing_token if leader else 0

    async def _store_probe(self) -> cluster_service_pb2.DependencyHealth:
        ok, detail = await self.db.healthy()
        return cluster_service_pb2.DependencyHealth(
            name="store", backend=self.db.dialect, healthy=ok, detail=detail
        )

    async def _coordination_probe(self) -> cluster_service_pb2.DependencyHealth:
        ok = await self.coordinator.healthy()
        return cluster_service_pb2.DependencyHealth(
            name="coordination",
            backend=self.coordinator.backend,
            healthy=ok,
            detail="" if ok else "unreachable",
        )

    async def _events_probe(self) -> cluster_service_pb2.DependencyHealth:
        health = await self.events.health()
        return cluster_service_pb2.DependencyHealth(
            name="events", backend=health.backend, healthy=health.healthy, detail=health.detail
        )

    async def start(self) -> None:
        """Migrate, join the cluster and start serving."""
        settings = self.settings
        await self.db.migrate()
        self.ingest.writer.start()
        self.ingest.projector.start()
        await self.pollers.ensure_tenant("default", utcnow())
        tls = tls_material(settings)
        # ServerInterceptor is outermost, so it maps the authz interceptor's errors to statuses.
        interceptors = [ServerInterceptor(), AuthzInterceptor(self.access, settings.trust_domain)]
        server = grpc.aio.server(interceptors=interceptors, options=grpc_options(settings))
        edge_service_pb2_grpc.add_EdgeServiceServicer_to_server(
            EdgeServicer(self.registry, self.ingest, settings.trust_domain, utcnow), server
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterServicer(
                self.coordinator,
                self.replica_id,
                [self._store_probe, self._coordination_probe, self._events_probe],
            ),
            server,
        )
        poller_service_pb2_grpc.add_PollerServiceServicer_to_server(PollerServicer(self.pollers), server)
        event_service_pb2_grpc.add_EventServiceServicer_to_server(
            EventServicer(
                self.events.outbox, self.events.signal, settings.events_poll_interval, settings.trust_domain
            ),
            server,
        )
        batch_service_pb2_grpc.add_BatchServiceServicer_to_server(
            BatchServicer(self.ingest.store, settings.trust_domain), server
        )
        result_service_pb2_grpc.add_ResultServiceServicer_to_server(
            ResultServicer(self.db, settings.trust_domain), server
        )
        tenant_service_pb2_grpc.add_TenantServiceServicer_to_server(TenantServicer(self.access), server)
        partition_service_pb2_grpc.add_PartitionServiceServicer_to_server(
            PartitionServicer(self.access), server
        )
        token_service_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(self.access), server)
        package_service_pb2_grpc.add_PackageServiceServicer_to_server(PackageServicer(self.access), server)
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(self.access), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            DocumentedReflection(
                (
                    *SERVICE_NAMES,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                )
            ),
            server,
        )
        # The main port is mutual TLS: grpc python cannot ask for an optional client certificate
        # (False means "never request one"), so client auth is always required there.
        credentials = server_credentials(tls.cert, tls.key, tls.client_ca, require_client_auth=True)
        self.port = server.add_secure_port(settings.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        if settings.admin_listen:
            # Token-only callers: server TLS, no client certificate, so every call there is
            # anonymous until its bearer token says otherwise (docs/security.md).
            admin_credentials = server_credentials(
                tls.cert, tls.key, tls.client_ca, require_client_auth=False
            )
            self.admin_port = server.add_secure_port(settings.admin_listen, admin_credentials)
            if self.admin_port == 0:
                raise OSError(f"cannot listen on {settings.admin_listen}")
        self.access.prepare(tls.client_ca, self.port)
        host = settings.listen.rpartition(":")[0]
        address = settings.advertise_address or f"{host}:{self.port}"
        self.events.start()
        await self.coordinator.start(ReplicaInfo(self.replica_id, address, srcore.__version__, time.time()))
        await server.start()
        self.server = server
        await self.refresh_health()
        if settings.metrics_listen:
            self.metrics_port = serve_metrics(settings.metrics_listen)
        self._tasks = [
            asyncio.create_task(self._health_loop(), name="health-probe"),
            asyncio.create_task(self._flush_loop(), name="heartbeat-flush"),
            asyncio.create_task(self._batch_expiry_loop(), name="batch-expiry"),
            asyncio.create_task(self.access.run(self._stopping, self.coordinator), name="access"),
        ]
        log.info("replica %s serving on %s (store %s, coordination %s)",
                 self.replica_id, address, self.db.dialect, self.coordinator.backend)  # fmt: skip

    async def refresh_health(self) -> None:
        """Probe the store and publish SERVING or NOT_SERVING on the health service."""
        ok, detail = await self.db.healthy()
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *SERVICE_NAMES):
            await self.health.set(service, status)
        if not ok:
            log.warning("not serving: store %s", detail)

    async def _health_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(HEALTH_PROBE_INTERVAL)
            await self.refresh_health()

    async def _flush_loop(self) -> None:
        # Heartbeats are answered from memory and written here in batches, so a fleet's
        # heartbeats cost one store transaction per interval instead of one per heartbeat.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.heartbeat_flush_interval)
            await self._flush_once()

    async def _flush_once(self) -> None:
        try:
            written = await self.registry.flush()
        except Exception as exc:
            log.warning("heartbeat flush failed, will retry: %s", exc)
            return
        if written:
            HEARTBEAT_FLUSHES.observe(written)

    async def _batch_expiry_loop(self) -> None:
        # Leader-only: half-open batches past the resume window become expired (visible to
        # operators, no longer resumable).
        period = max(1.0, min(60.0, self.settings.ingest_resume_window / 10))
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), period)
            if self._stopping.is_set() or not self.coordinator.is_leader():
                continue
            await self.expire_batches()

    async def expire_batches(self) -> int:
        """Expire batches idle past the resume window; returns how many."""
        now = utcnow()
        idle_before = now - timedelta(seconds=self.settings.ingest_resume_window)
        try:
            expired = await self.ingest.store.expire_batches(idle_before, now)
        except Exception as exc:
            log.warning("batch expiry failed, will retry: %s", exc)
            return 0
        if expired:
            log.info("expired %d half-open batches", expired)
        return expired

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish within the grace period, clean up."""
        self._stopping.set()
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self.settings.grace_period)
        await self.ingest.writer.stop()
        await self.ingest.projector.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_once()
        await self.access.flush_last_used()
        await self.coordinator.close()
        await self.events.stop()
        await self.db.dispose()
        log.info("replica %s stopped", self.replica_id)
