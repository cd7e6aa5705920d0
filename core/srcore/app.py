"""Wiring: builds the adapters from settings, serves gRPC, runs background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

import srcore
from serviceradar.admin.v1 import (
    alert_service_pb2,
    alert_service_pb2_grpc,
    assignment_service_pb2,
    assignment_service_pb2_grpc,
    audit_service_pb2,
    audit_service_pb2_grpc,
    batch_service_pb2,
    batch_service_pb2_grpc,
    check_service_pb2,
    check_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    device_service_pb2,
    device_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    notifier_service_pb2,
    notifier_service_pb2_grpc,
    package_service_pb2,
    package_service_pb2_grpc,
    partition_service_pb2,
    partition_service_pb2_grpc,
    poller_service_pb2,
    poller_service_pb2_grpc,
    result_service_pb2,
    result_service_pb2_grpc,
    source_service_pb2,
    source_service_pb2_grpc,
    stats_service_pb2,
    stats_service_pb2_grpc,
    sweep_service_pb2,
    sweep_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
    tenant_service_pb2,
    tenant_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from serviceradar.edge.v1 import edge_service_pb2, edge_service_pb2_grpc
from srcore.alerting.delivery import Sender
from srcore.alerting.service import Alerting, AlertPolicy
from srcore.api.access import EXPIRY_SWEEP_INTERVAL, Access
from srcore.api.alerts import AlertServicer
from srcore.api.audit import AuditServicer
from srcore.api.authz import AuthzInterceptor
from srcore.api.batches import BatchServicer
from srcore.api.cluster import ClusterServicer
from srcore.api.config_sync import ConfigSync
from srcore.api.devices import DeviceServicer
from srcore.api.edge import EdgeServicer
from srcore.api.events import EventServicer
from srcore.api.interceptors import ServerInterceptor
from srcore.api.notifiers import NotifierServicer
from srcore.api.packages import PackageServicer
from srcore.api.partitions import PartitionServicer
from srcore.api.pollers import PollerServicer
from srcore.api.reflection import DocumentedReflection
from srcore.api.results import ResultServicer
from srcore.api.stats import StatsServicer
from srcore.api.templates import TemplateServicer
from srcore.api.tenants import TenantServicer
from srcore.api.tokens import TokenServicer
from srcore.api.work import AssignmentServicer, CheckServicer, SourceServicer, SweepServicer
from srcore.coord.etcd import EtcdCoordinator
from srcore.coord.etcd_signals import EtcdSignalBus
from srcore.coord.jobs import LeaderJobs
from srcore.coord.local import LocalCoordinator
from srcore.coord.signals import LocalSignalBus
from srcore.dispatch.dispatcher import Dispatcher
from srcore.dispatch.drain import DrainService
from srcore.dispatch.hub import ConfigHub
from srcore.dispatch.work import WorkService
from srcore.domain.alerts import Notice, Thresholds
from srcore.domain.coordination import Coordinator, LeaderInfo, ReplicaInfo
from srcore.domain.errors import Unavailable
from srcore.domain.ingest import Budget, IngestLimits
from srcore.domain.leadership import every
from srcore.domain.liveness import LivenessMonitor, LivenessPolicy, MaintenanceService
from srcore.domain.processing import ProcessingPolicy
from srcore.domain.registry import RegistryService
from srcore.domain.signals import SignalBus
from srcore.events.config import EventConfig
from srcore.events.runtime import EventsRuntime
from srcore.ingest.identity import IdentityStage
from srcore.ingest.projector import Projector
from srcore.ingest.stream import IngestService
from srcore.ingest.writer import BatchingWriter, CommittedFlush
from srcore.observability.loop_lag import watch_loop_lag
from srcore.observability.metrics import HEARTBEAT_FLUSHES, serve_metrics
from srcore.security.credentials import CredentialVault
from srcore.security.pki import ensure_dev_pki
from srcore.security.tls import load_pem, server_credentials
from srcore.settings import Settings
from srcore.store.alerts import AlertRepository
from srcore.store.database import Database, sqlite_url
from srcore.store.devices import DeviceRepository
from srcore.store.fence import FenceRepository
from srcore.store.ingest import IngestStore
from srcore.store.liveness import LivenessRepository
from srcore.store.pollers import PollerRepository
from srcore.store.stats import StatsRepository
from srcore.store.templates import TemplateRepository
from srcore.store.work import WorkRepository

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
    check_service_pb2.DESCRIPTOR.services_by_name["CheckService"].full_name,
    sweep_service_pb2.DESCRIPTOR.services_by_name["SweepService"].full_name,
    source_service_pb2.DESCRIPTOR.services_by_name["SourceService"].full_name,
    assignment_service_pb2.DESCRIPTOR.services_by_name["AssignmentService"].full_name,
    device_service_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name,
    alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name,
    notifier_service_pb2.DESCRIPTOR.services_by_name["NotifierService"].full_name,
    stats_service_pb2.DESCRIPTOR.services_by_name["StatsService"].full_name,
    template_service_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
)
HEALTH_PROBE_INTERVAL = 2.0
# Second-generation collections per full collection (CPython's default is 10).
FULL_COLLECTION_THRESHOLD = 100
# Joining the cluster at boot while etcd is down: retry with backoff up to this delay.
JOIN_RETRY_MAX_DELAY = 10.0
# A replica's start and stop notices are best effort: at most this long, never failing either.
CORE_NOTICE_TIMEOUT = 10.0


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
    if settings.etcd_endpoints:
        return EtcdCoordinator(settings.etcd_endpoints, settings.etcd_prefix, settings.lease_ttl)
    return LocalCoordinator()


def build_signals(settings: Settings) -> SignalBus:
    """Signals between replicas: through etcd when it coordinates, else in-process."""
    if settings.etcd_endpoints:
        return EtcdSignalBus(settings.etcd_endpoints, settings.etcd_prefix)
    return LocalSignalBus()


def build_ingest(
    settings: Settings,
    db: Database,
    identity: IdentityStage | None = None,
    *,
    replica_id: str,
    fencing_token: Callable[[], int],
) -> IngestService:
    """The ReportResults pipeline: limits, budget, ledger store and batching writer.

    Each committed flush wakes the latest-state projector and, when enabled, device identity.
    """
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
    policy = ProcessingPolicy(settings.max_open_ports_per_host, settings.check_failing_after)
    projector = Projector(db, policy, utcnow, replica_id, fencing_token, max_lag=settings.processing_max_lag)
    writer = BatchingWriter(
        store,
        budget,
        utcnow,
        settings.ingest_flush_results,
        settings.ingest_flush_delay,
        writers,
        on_flush=projector.notify if identity is None else _both(projector.notify, identity.notify),
    )
    return IngestService(store, writer, budget, limits, utcnow, projector)


def _both(
    first: Callable[[CommittedFlush], None], second: Callable[[CommittedFlush], None]
) -> Callable[[CommittedFlush], None]:
    def notify(flush: CommittedFlush) -> None:
        first(flush)
        second(flush)

    return notify


def build_leader_jobs(app: CoreApp) -> LeaderJobs:
    """The runner of the leader-only jobs, with the jobs of this build registered."""
    settings = app.settings
    jobs = LeaderJobs(app.coordinator, FenceRepository(app.db, utcnow))
    policy = LivenessPolicy(
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_timeout=settings.heartbeat_timeout,
        flush_interval=settings.heartbeat_flush_interval,
        inactive_after=settings.poller_inactive_after,
    )
    monitor = LivenessMonitor(
        app.liveness, app.coordinator.registry, utcnow, policy, settings.liveness_check_interval
    )
    jobs.add("liveness", monitor.run)
    # Half-open batches past the resume window become expired (visible, no longer resumable).
    batch_period = max(1.0, min(60.0, settings.ingest_resume_window / 10))
    jobs.add("batch-expiry", every(batch_period, app.expire_batches))
    jobs.add("package-expiry", every(EXPIRY_SWEEP_INTERVAL, app.access.expire_packages))
    jobs.add("dispatch", app.dispatcher.run)
    for name, job in app.alerting.jobs().items():
        jobs.add(name, job)
    jobs.add("stats", every(settings.stats_refresh_interval, app.stats.refresh))
    for name, job in app.events.leader_jobs().items():
        jobs.add(name, job)
    return jobs


def build_alerting(app: CoreApp) -> Alerting:
    """Alert evaluation, delivery and notifiers, from the alert_* settings."""
    settings = app.settings
    policy = AlertPolicy(
        evaluation_interval=settings.alert_evaluation_interval,
        escalate_after=timedelta(seconds=settings.alert_escalation_delay),
        cooldown=timedelta(seconds=settings.alert_cooldown),
        reject_window=timedelta(seconds=settings.alert_reject_window),
        thresholds=Thresholds(
            sweep_drop=settings.alert_sweep_drop_threshold,
            sweep_min_hosts=settings.alert_sweep_min_hosts,
            reject_ratio=settings.alert_reject_ratio,
            reject_min_results=settings.alert_reject_min_results,
        ),
        core_notices=settings.alert_core_notices,
        delivery_rounds=settings.alert_delivery_rounds,
        redelivery_delay=timedelta(seconds=settings.alert_redelivery_delay),
    )
    sender = Sender(
        utcnow,
        settings.alert_delivery_attempts,
        settings.alert_delivery_backoff,
        settings.alert_delivery_timeout,
    )
    return Alerting(
        AlertRepository(app.db), app.work.vault, sender, utcnow, app.replica_id, app._fencing_token, policy
    )


def _log_join_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "cannot join the cluster (attempt %d), retrying in %.1fs: %s", state.attempt_number, delay, error
    )


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
        self.stats = StatsRepository(self.db, utcnow, settings.stats_window)
        self.templates = TemplateRepository(self.db, utcnow)
        self.events = EventsRuntime(
            self.db, self.coordinator, EventConfig.from_settings(settings), self.replica_id
        )
        self.identity = (
            IdentityStage(
                self.db,
                utcnow,
                self.replica_id,
                settings.identity_cache_size,
                settings.identity_cache_ttl,
                settings.identity_last_seen_resolution,
            )
            if settings.identity_enabled
            else None
        )
        self.ingest = build_ingest(
            settings, self.db, self.identity, replica_id=self.replica_id, fencing_token=self._fencing_token
        )
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
        self.liveness = LivenessRepository(self.db)
        self.maintenance = MaintenanceService(
            self.liveness, self.coordinator.registry, utcnow, self.replica_id, self._fencing_token
        )
        self.signals = build_signals(settings)
        self.work = WorkService(
            WorkRepository(self.db), self.signals, CredentialVault(lambda: self.access.keyring), utcnow
        )
        self.alerting = build_alerting(self)
        self.drains = DrainService(self.liveness, self.signals, utcnow, self.replica_id, self._fencing_token)
        self.hub = ConfigHub(self.signals, self.registry)
        self.config_sync = ConfigSync(
            self.work.repository,
            self.pollers,
            self.work.vault,
            self.hub,
            utcnow,
            settings.heartbeat_interval,
            settings.sync_keepalive_interval,
        )
        self.dispatcher = Dispatcher(
            self.work.repository,
            self.coordinator.registry,
            self.signals,
            utcnow,
            self.replica_id,
            settings.heartbeat_interval,
            rebalance_threshold=settings.dispatch_rebalance_threshold,
            resync_interval=settings.dispatch_resync_interval,
            registry_settle=settings.dispatch_registry_settle,
        )
        self.leader_jobs = build_leader_jobs(self)
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
        running = self.leader_jobs.running
        if not ok:
            detail = "unreachable: no replica leads until it answers; heartbeats and ingest go on"
        elif running is not None:
            detail = f"this replica runs the leader jobs (fencing token {running.fencing_token})"
        else:
            detail = ""
        return cluster_service_pb2.DependencyHealth(
            name="coordination", backend=self.coordinator.backend, healthy=ok, detail=detail
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
        if self.identity is not None:
            self.identity.start()
        await self.pollers.ensure_tenant("default", utcnow())
        tls = tls_material(settings)
        # ServerInterceptor is outermost, so it maps the authz interceptor's errors to statuses.
        interceptors = [ServerInterceptor(), AuthzInterceptor(self.access, settings.trust_domain)]
        server = grpc.aio.server(interceptors=interceptors, options=grpc_options(settings))
        edge_service_pb2_grpc.add_EdgeServiceServicer_to_server(
            EdgeServicer(
                self.registry,
                self.ingest,
                self.config_sync,
                settings.trust_domain,
                utcnow,
                self.templates,
                settings.template_max_bytes,
            ),
            server,
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterServicer(
                self.coordinator,
                self.replica_id,
                [self._store_probe, self._coordination_probe, self._events_probe],
            ),
            server,
        )
        poller_service_pb2_grpc.add_PollerServiceServicer_to_server(
            PollerServicer(self.pollers, self.liveness, self.maintenance, self.drains), server
        )
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
        check_service_pb2_grpc.add_CheckServiceServicer_to_server(CheckServicer(self.work), server)
        sweep_service_pb2_grpc.add_SweepServiceServicer_to_server(SweepServicer(self.work), server)
        source_service_pb2_grpc.add_SourceServiceServicer_to_server(SourceServicer(self.work), server)
        assignment_service_pb2_grpc.add_AssignmentServiceServicer_to_server(
            AssignmentServicer(self.work), server
        )
        stats_service_pb2_grpc.add_StatsServiceServicer_to_server(StatsServicer(self.stats), server)
        template_service_pb2_grpc.add_TemplateServiceServicer_to_server(
            TemplateServicer(self.templates, settings.template_max_bytes), server
        )
        alert_service_pb2_grpc.add_AlertServiceServicer_to_server(AlertServicer(self.alerting), server)
        notifier_service_pb2_grpc.add_NotifierServiceServicer_to_server(
            NotifierServicer(self.alerting), server
        )
        device_service_pb2_grpc.add_DeviceServiceServicer_to_server(
            DeviceServicer(DeviceRepository(self.db)), server
        )
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
        # Before serving: a SyncConfig stream must see every change signalled after it reads.
        await self.signals.start()
        self.hub.start()
        self.leader_jobs.start()
        await self._join_cluster(ReplicaInfo(self.replica_id, address, srcore.__version__, time.time()))
        await server.start()
        self.server = server
        await self.refresh_health()
        if settings.metrics_listen:
            self.metrics_port = serve_metrics(settings.metrics_listen)
        self._tasks = [
            asyncio.create_task(self._health_loop(), name="health-probe"),
            asyncio.create_task(watch_loop_lag(self._stopping), name="loop-lag"),
            asyncio.create_task(self._flush_loop(), name="heartbeat-flush"),
            asyncio.create_task(self.access.run(self._stopping), name="access"),
        ]
        self._tasks.append(
            asyncio.create_task(
                self._core_notice(Notice.CORE_STARTED, f"serving on {address}"), name="start-notice"
            )
        )
        # Everything built so far lives as long as the process. Moved out of the collector's
        # reach, it is not rescanned by every full collection, which otherwise held the event
        # loop for ~100 ms every few seconds under a fleet's heartbeats (bench/heartbeat.py);
        # full collections of what a fleet creates later (sessions, connections) are made ten
        # times rarer than CPython's default. Reference counting frees nearly everything anyway.
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
        log.info("replica %s serving on %s (store %s, coordination %s)",
                 self.replica_id, address, self.db.dialect, self.coordinator.backend)  # fmt: skip

    async def _join_cluster(self, me: ReplicaInfo) -> None:
        # etcd down at boot is a dependency outage, not a configuration error: keep trying
        # (the health service is not serving yet) rather than exit and crash-loop.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Unavailable),
            wait=wait_exponential_jitter(multiplier=0.5, max=JOIN_RETRY_MAX_DELAY, jitter=0.5),
            before_sleep=_log_join_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.coordinator.start(me)

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
                async with asyncio.timeout(self.settings.heartbeat_flush_interval):
                    await self._stopping.wait()
            await self._flush_once()

    async def _flush_once(self) -> None:
        try:
            written = await self.registry.flush()
        except Exception as exc:
            log.warning("heartbeat flush failed, will retry: %s", exc)
            return
        if written:
            HEARTBEAT_FLUSHES.observe(written)

    async def expire_batches(self, leader: LeaderInfo) -> int:
        """Expire batches idle past the resume window (a leader job); returns how many.

        Raises Fenced when a later leadership has written.
        """
        now = utcnow()
        idle_before = now - timedelta(seconds=self.settings.ingest_resume_window)
        expired = await self.ingest.store.expire_batches(idle_before, now, leader)
        if expired:
            log.info("expired %d half-open batches", expired)
        return expired

    async def _core_notice(self, notice: Notice, detail: str) -> None:
        # Best effort: a receiver that is down must neither fail nor hold up a start or a stop.
        try:
            async with asyncio.timeout(CORE_NOTICE_TIMEOUT):
                await self.alerting.core_notice(notice, detail)
        except Exception as exc:
            log.warning("%s notice not sent: %s", notice, exc)

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish within the grace period, clean up."""
        self._stopping.set()
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
        # SyncConfig streams never end by themselves: end them with UNAVAILABLE now, so their
        # pollers reconnect to another replica instead of being cut off after the grace period.
        await self.hub.close()
        # Resign before draining calls, so another replica takes over the leader jobs at once
        # rather than after the grace period. Calls in flight need no coordination to finish:
        # heartbeats are answered from memory, ingest is the store's.
        await self.coordinator.close()
        await self.leader_jobs.stop()
        if self.server is not None:
            await self.server.stop(self.settings.grace_period)
        await self.ingest.writer.stop()
        await self.ingest.projector.stop()
        if self.identity is not None:
            await self.identity.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_once()
        await self.access.flush_last_used()
        await self.signals.close()
        await self._core_notice(Notice.CORE_STOPPED, "shutting down")
        await self.alerting.close()
        await self.events.stop()
        await self.db.dispose()
        log.info("replica %s stopped", self.replica_id)
