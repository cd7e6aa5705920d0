"""Several `srcore serve` replicas on one etcd prefix and one PostgreSQL database, for the
failover tests: they share one dev PKI (copied into each data dir), so one operator and one set
of edge certificates reach them all."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg

from serviceradar.admin.v1 import cluster_service_pb2 as cluster_pb
from serviceradar.admin.v1 import cluster_service_pb2_grpc as cluster_grpc
from serviceradar.admin.v1 import poller_service_pb2 as poller_pb
from serviceradar.admin.v1 import poller_service_pb2_grpc as poller_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as edge_grpc
from srcore.security.pki import ensure_dev_pki, issue_edge_certificate, load_or_create_ca
from srcore.store.database import Database
from srcore.store.fence import FenceRecord, FenceRepository
from tests.helpers.core import CoreProcess, start_core_process
from tests.helpers.waiting import eventually
from tests.services import free_port

TTL = 3
# Second-scale liveness: late after 1.5 * 1 + 0.2 = 1.7 s of silence, offline when the 3 s
# registry lease expires.
SETTINGS = {
    "SRCORE_HEARTBEAT_INTERVAL": "1",
    "SRCORE_HEARTBEAT_TIMEOUT": "3",
    "SRCORE_HEARTBEAT_FLUSH_INTERVAL": "0.2",
    "SRCORE_LIVENESS_CHECK_INTERVAL": "0.2",
    "SRCORE_GRACE_PERIOD": "2",
}


def libpq(url: str) -> str:
    """A SQLAlchemy psycopg URL as psycopg itself takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class Replica:
    """One replica process and how to call it."""

    name: str
    process: CoreProcess
    channel: grpc.aio.Channel

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.process.pid

    def signal(self, signum: int) -> None:
        """Send it a signal by PID."""
        self.process.terminate(signum)

    async def status(self, timeout: float = 10) -> cluster_pb.GetClusterStatusResponse:
        """GetClusterStatus as this replica answers it."""
        stub = cluster_grpc.ClusterServiceStub(self.channel)
        return await stub.GetClusterStatus(cluster_pb.GetClusterStatusRequest(), timeout=timeout)

    async def claims(self) -> bool:
        """Whether this replica says it leads."""
        status = await self.status()
        return status.leader_id == self.name

    def log(self) -> str:
        """What it printed so far."""
        return self.process.log()


@dataclass
class Cluster:
    """Replicas on one etcd prefix and one database; `stop()` ends every process it started."""

    root: Path
    endpoints: list[str]
    database_url: str
    prefix: str = field(default_factory=lambda: f"/srcore-test/{uuid.uuid4().hex[:12]}/")
    replicas: dict[str, Replica] = field(default_factory=dict)
    # Every process started, recorded as soon as it serves, so stop() ends them all even when
    # starting another one failed.
    processes: list[CoreProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki = self.root / "pki"
        ensure_dev_pki(self.pki)
        self.ca = load_or_create_ca(self.pki, "unused: the CA exists")
        self.db = Database(self.database_url)
        self.fence = FenceRepository(self.db, lambda: datetime.now(UTC))

    def credentials(self, cert: str, key: str) -> grpc.ChannelCredentials:
        """mTLS credentials of one of the shared PKI's certificates."""
        pki = self.pki
        return grpc.ssl_channel_credentials(
            (pki / "ca.pem").read_bytes(), (pki / key).read_bytes(), (pki / cert).read_bytes()
        )

    async def start(self, *names: str, env: dict[str, str] | None = None) -> list[Replica]:
        """Start replicas (concurrently), with `env` over SETTINGS, and wait until each serves."""
        # One migration up front: replicas migrating one empty database at once would race.
        await self.db.migrate()
        launches = (asyncio.to_thread(self._launch, name, env or {}) for name in names)
        processes = await asyncio.gather(*launches)
        started = []
        for name, process in zip(names, processes, strict=True):
            operator = self.credentials("operator.pem", "operator-key.pem")
            replica = Replica(name, process, grpc.aio.secure_channel(process.address, operator))
            self.replicas[name] = replica
            started.append(replica)
        return started

    def _launch(self, name: str, overrides: dict[str, str]) -> CoreProcess:
        data_dir = self.root / name
        shutil.copytree(self.pki, data_dir / "pki")
        env = {
            **SETTINGS,
            **overrides,
            "SRCORE_ETCD_ENDPOINTS": ",".join(self.endpoints),
            "SRCORE_ETCD_PREFIX": self.prefix,
            "SRCORE_LEASE_TTL": str(TTL),
            "SRCORE_DATABASE_URL": self.database_url,
            "SRCORE_REPLICA_ID": name,
        }
        process = start_core_process(data_dir, free_port(), env, timeout=60)
        self.processes.append(process)
        return process

    def alive(self) -> list[Replica]:
        """Replicas whose process still runs."""
        return [r for r in self.replicas.values() if r.process.process.poll() is None]

    async def leader(self, among: list[Replica] | None = None, timeout: float = 15) -> Replica:
        """The one replica that claims leadership, once every replica in `among` agrees on it
        and it runs the leader jobs (it claimed the fence)."""
        group = among or self.alive()
        found: list[Replica] = []

        async def agreed() -> bool:
            statuses = await asyncio.gather(*(r.status() for r in group))
            leaders = {s.leader_id for s in statuses}
            claiming = [r for r, s in zip(group, statuses, strict=True) if s.leader_id == r.name]
            if len(leaders) != 1 or len(claiming) != 1:
                return False
            record = await self.fence.current()
            if record.replica != claiming[0].name or record.token != statuses[0].fencing_token:
                return False
            found[:] = claiming
            return True

        if not await eventually(agreed, timeout, 0.1):
            raise AssertionError(f"no single leader running the jobs among {[r.name for r in group]}")
        return found[0]

    async def fenced_by(self, name: str) -> FenceRecord:
        """The fence row once `name` claimed it."""
        claimed = await eventually(lambda: self._fence_is(name), 15, 0.02)
        record = await self.fence.current()
        assert claimed, f"{name} never claimed the fence; it is held by {record.replica}"
        return record

    async def _fence_is(self, name: str) -> bool:
        return (await self.fence.current()).replica == name

    def edge(self, replica: Replica, poller_id: str) -> grpc.aio.Channel:
        """A channel to `replica` as poller `poller_id` of tenant default."""
        issued = issue_edge_certificate(self.ca, "serviceradar", "default", poller_id, timedelta(hours=1))
        ca = (self.pki / "ca.pem").read_bytes()
        return grpc.aio.secure_channel(
            replica.process.address, grpc.ssl_channel_credentials(ca, issued.key_pem, issued.cert_pem)
        )

    async def transitions(self, poller_id: str) -> list[tuple[str, str, str, int]]:
        """(from, to, replica, fencing token) of a poller's transitions, oldest first."""
        async with await psycopg.AsyncConnection.connect(libpq(self.database_url)) as conn:
            cursor = await conn.execute(
                "SELECT from_state, to_state, replica, fencing_token FROM state_transitions"
                " WHERE entity_type = 'poller' AND entity_id = %s ORDER BY id",
                (poller_id,),
            )
            return [(r[0], r[1], r[2], r[3]) for r in await cursor.fetchall()]

    async def stop(self) -> None:
        """Kill what still runs (SIGCONT first, in case it is stopped) and close channels."""
        for replica in self.replicas.values():
            await replica.channel.close()
        for started in self.processes:
            process = started.process
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
        await self.db.dispose()


class Poller:
    """A poller of tenant default talking to one replica through the real edge RPCs."""

    def __init__(self, cluster: Cluster, replica: Replica, poller_id: str) -> None:
        self.poller_id = poller_id
        self.channel = cluster.edge(replica, poller_id)
        self.stub = edge_grpc.EdgeServiceStub(self.channel)
        self.session = ""

    async def register(self) -> None:
        """RegisterPoller with one agent."""
        answer = await self.stub.RegisterPoller(
            edge_pb.RegisterPollerRequest(
                poller_id=self.poller_id, partition="dc1", agents=[edge_pb.AgentInfo(agent_id="a1")]
            ),
            timeout=10,
        )
        self.session = answer.session_id

    async def beat(self) -> None:
        """One clean ReportHealth."""
        await self.stub.ReportHealth(
            edge_pb.ReportHealthRequest(
                session_id=self.session, poller_id=self.poller_id, status=edge_pb.COMPONENT_STATUS_OK
            ),
            timeout=5,
        )

    async def beats(self, seconds: float) -> None:
        """Heartbeat on time (twice per interval) for `seconds`."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            await self.beat()
            await asyncio.sleep(0.5)


async def poller_state(replica: Replica, poller_id: str) -> int:
    """The poller's state as `replica` reports it."""
    stub = poller_grpc.PollerServiceStub(replica.channel)
    answer = await stub.GetPoller(poller_pb.GetPollerRequest(poller_id=poller_id), timeout=10)
    return answer.poller.state
