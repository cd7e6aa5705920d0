"""Production coordination on etcd v3: a lease-backed poller registry and leader election.

Keyspace under the prefix (default `/serviceradar/`):

    cores/<replica>                          ReplicaInfo JSON, bound to the replica's lease
    pollers/<tenant>/<partition>/<poller>    RegistryEntry JSON, bound to a lease of its own
                                             whose TTL is the poller's heartbeat timeout
    election/leader/<replica lease id, hex>  a replica's campaign key, bound to its lease

Every replica keeps a copy of the keyspace in memory (`Mirror`: listed once, then fed by one
prefix watch), so registry reads and touches never wait for etcd.

Heartbeats. `touch()` checks the session against memory and records the poller's lease in a
set; every `refresh_interval` the set is written as lease refreshes into ONE long-lived
LeaseKeepAlive stream. Touches of the same poller within an interval cost one refresh, no
touch costs a round trip, and an entry expires between its TTL and TTL + refresh_interval
after its last touch (whole seconds: etcd leases have integer TTLs, 2 s at least).

Leadership. Each replica puts its campaign key with its own lease; the live key with the
lowest create revision leads and that revision is the fencing token, so a later leadership
always has a larger token. A replica leads only while (1) its key is the lowest in a copy
that has caught up with the key's own revision and (2) its lease is fresh: a keepalive sent
at `t` and answered with TTL `T` proves the lease lives until at least `t + T` on etcd's
clock, and the replica stops leading at `t + T - step_down_margin`, before etcd can expire
the lease and let another replica win. A replica that learns its lease is gone starts a new
campaign with a new lease (a larger revision, so it queues behind the new leader).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Coroutine
from typing import Any

from srcore.coord.etcd_client import (
    EtcdClient,
    EtcdCounters,
    EtcdError,
    KeepAliveStream,
    WatchCompacted,
    delete_op,
    put_op,
)
from srcore.coord.etcd_mirror import (
    CAMPAIGN,
    CORES,
    Mirror,
    decode_replica,
    encode_entry,
    encode_replica,
    poller_key,
)
from srcore.coord.local import ChangeFeed, ChangeSubscription, LeadershipNotifier
from srcore.domain.coordination import (
    LeaderInfo,
    LeadershipCallback,
    RegistryEntry,
    ReplicaInfo,
)
from srcore.domain.errors import Unavailable

log = logging.getLogger(__name__)


class EtcdRegistry:
    """The poller registry: reads from the mirror, writes to etcd, batched lease refreshes."""

    def __init__(
        self,
        etcd: EtcdClient,
        mirror: Mirror,
        feed: ChangeFeed,
        prefix: bytes,
        refresh_interval: float,
    ) -> None:
        self._etcd = etcd
        self._mirror = mirror
        self._feed = feed
        self._prefix = prefix
        self._refresh_interval = refresh_interval
        self._pending: set[int] = set()
        self._keeper = KeepAliveStream(etcd, "registry", on_response=self._answered, on_lost=self._requeue)

    async def put(self, entry: RegistryEntry, ttl: float) -> None:
        """Insert or replace the entry under a new lease of `ttl` seconds (rounded up).

        A poller that registers again in another partition loses its old key in the same
        transaction. Returns once this replica's copy shows the entry; raises Unavailable
        when etcd does not answer within the operation timeout.
        """
        key = poller_key(self._prefix, entry)
        previous = self._mirror.records(entry.tenant, entry.poller_id)
        try:
            lease, _ = await self._etcd.grant(max(1, math.ceil(ttl)))
        except EtcdError as exc:
            raise Unavailable(f"coordination (etcd) unavailable: {exc}") from exc
        operations = [put_op(key, encode_entry(entry), lease)]
        operations += [delete_op(r.key) for r in previous if r.key != key]
        try:
            response = await self._etcd.txn(operations)
        except EtcdError as exc:
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(lease)
            raise Unavailable(f"coordination (etcd) unavailable: {exc}") from exc
        for record in previous:
            # The old lease would otherwise be refreshed by touches already recorded and
            # linger, keyless, until its TTL.
            self._pending.discard(record.lease)
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(record.lease)
        await self._caught_up(int(response.header.revision))

    async def touch(self, tenant: str, poller_id: str, session_id: str) -> RegistryEntry | None:
        """Record a heartbeat; the lease refresh goes out with the next batch.

        Returns the live entry when `session_id` is its session, else None. No I/O.
        """
        record = self._mirror.poller(tenant, poller_id)
        if record is None or record.entry.session_id != session_id:
            return None
        self._pending.add(record.lease)
        self._etcd.counters.touches += 1
        return record.entry

    async def get(self, tenant: str, poller_id: str) -> RegistryEntry | None:
        """The live entry for a poller, from memory."""
        record = self._mirror.poller(tenant, poller_id)
        return record.entry if record else None

    async def list(self, tenant: str | None = None, partition: str | None = None) -> list[RegistryEntry]:
        """Live entries from memory, ordered by (tenant, partition, poller_id)."""
        return [r.entry for r in self._mirror.pollers(tenant, partition)]

    async def remove(self, tenant: str, poller_id: str) -> None:
        """Delete the poller's keys and revoke their leases; raises Unavailable without etcd."""
        records = self._mirror.records(tenant, poller_id)
        if not records:
            return
        try:
            response = await self._etcd.txn([delete_op(r.key) for r in records])
        except EtcdError as exc:
            raise Unavailable(f"coordination (etcd) unavailable: {exc}") from exc
        for record in records:
            self._pending.discard(record.lease)
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(record.lease)
        if any(r.response_delete_range.deleted for r in response.responses):
            await self._caught_up(int(response.header.revision))

    def changes(self) -> ChangeSubscription:
        """Subscribe to changes from now on (see `PollerRegistry.changes`)."""
        return self._feed.subscribe()

    async def flush(self) -> None:
        """Write the recorded touches as lease refreshes now.

        What cannot be written (etcd unreachable) stays recorded for the next flush.
        """
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending = set()
        self._etcd.counters.refresh_batches += 1
        for index, lease in enumerate(batch):
            try:
                await self._keeper.send(lease)
            except EtcdError as exc:
                self._pending.update(batch[index:])
                log.debug("lease refreshes deferred: %s", exc)
                return
            self._etcd.counters.lease_refreshes += 1

    async def run_refresher(self) -> None:
        """Flush recorded touches every refresh interval, forever."""
        while True:
            await asyncio.sleep(self._refresh_interval)
            await self.flush()

    async def close(self) -> None:
        """Flush what was recorded (best effort) and close the keepalive stream."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._etcd.op_timeout):
                await self.flush()
        await self._keeper.close()

    async def _caught_up(self, revision: int) -> None:
        if not await self._mirror.wait_for(revision, self._etcd.op_timeout):
            # The write is durable; only this replica's copy lags (the watch is reconnecting).
            log.warning("registry copy has not reached revision %d yet", revision)

    def _answered(self, lease: int, ttl: int) -> None:
        if ttl <= 0:
            self._mirror.mark_dead(lease)

    def _requeue(self, leases: set[int]) -> None:
        self._pending |= leases


class EtcdCoordinator:
    """One replica's coordination through an etcd v3 cluster (see the module docstring)."""

    def __init__(
        self,
        endpoints: list[str],
        prefix: str = "/serviceradar/",
        lease_ttl: float = 10.0,
        *,
        op_timeout: float = 2.0,
        refresh_interval: float = 0.5,
        renew_interval: float | None = None,
        step_down_margin: float | None = None,
        health_timeout: float = 1.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """Configure; nothing connects before start().

        `lease_ttl` is the replica lease (crash failover takes about this long); it is rounded
        up to whole seconds. The lease is renewed every `renew_interval` (default TTL/3) and
        leadership ends `step_down_margin` (default min(1 s, TTL/5)) before the lease could
        expire. Each etcd request gives up after `op_timeout`.
        """
        if not prefix.endswith("/"):
            prefix += "/"
        self._prefix = prefix.encode()
        self._ttl = max(1, math.ceil(lease_ttl))
        self._renew_interval = renew_interval if renew_interval is not None else self._ttl / 3
        self._margin = step_down_margin if step_down_margin is not None else min(1.0, self._ttl / 5)
        self._op_timeout = op_timeout
        self._health_timeout = health_timeout
        self._etcd = EtcdClient(endpoints, op_timeout=op_timeout, username=username, password=password)
        self._feed = ChangeFeed()
        self._wake = asyncio.Event()
        self._renew_now = asyncio.Event()
        self._mirror = Mirror(self._prefix, self._feed, self._wake.set)
        self._registry = EtcdRegistry(self._etcd, self._mirror, self._feed, self._prefix, refresh_interval)
        self._keeper = KeepAliveStream(self._etcd, "replica")
        self._notifier = LeadershipNotifier()
        self._me: ReplicaInfo | None = None
        self._lease: int | None = None
        self._stale_lease: int | None = None
        self._campaign_key: bytes | None = None
        self._campaign_revision = 0
        self._campaign_cluster = 0
        self._fresh_until = 0.0
        self._closing = False
        self._closed = False
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def backend(self) -> str:
        """Backend name."""
        return "etcd"

    @property
    def registry(self) -> EtcdRegistry:
        """The poller registry."""
        return self._registry

    @property
    def counters(self) -> EtcdCounters:
        """Requests made of etcd so far (tests, benchmarks, metrics)."""
        return self._etcd.counters

    async def start(self, me: ReplicaInfo) -> None:
        """Join: lease, replica key and campaign key in one go, then copy the keyspace.

        Raises Unavailable when etcd does not answer; nothing is left running then, and
        start() may be called again (a replica booting during an etcd outage retries).
        """
        if self._me is not None:
            raise RuntimeError("EtcdCoordinator.start() called twice")
        self._me = me
        try:
            await self._join()
            await self._resync()
        except EtcdError as exc:
            if self._lease is not None:
                # A campaign key nobody renews would block every other replica for a TTL.
                with contextlib.suppress(EtcdError):
                    await self._etcd.revoke(self._lease)
            self._me = None
            self._lease = None
            self._campaign_key = None
            self._campaign_revision = 0
            self._campaign_cluster = 0
            self._fresh_until = 0.0
            raise Unavailable(f"coordination (etcd) unavailable: {exc}") from exc
        self._spawn("etcd-session", self._session_loop())
        self._spawn("etcd-watch", self._watch_loop())
        self._spawn("etcd-leadership", self._leadership_loop())
        self._spawn("etcd-registry-refresh", self._registry.run_refresher())

    async def close(self) -> None:
        """Resign and leave.

        Leadership callbacks hear of the loss first (waited for up to the lease TTL), then the
        replica lease is revoked, which deletes the campaign and replica keys at once so
        another replica leads without waiting for a TTL.
        """
        if self._closed:
            return
        if self._me is None:
            self._closed = True
            await self._etcd.close()
            return
        self._closing = True
        self._notifier.announce(None)
        await self._notifier.drain(self._ttl)
        await self._stop("etcd-session", "etcd-leadership", "etcd-registry-refresh")
        await self._registry.close()
        await self._keeper.close()
        if self._lease is not None:
            try:
                await self._etcd.revoke(self._lease)
            except EtcdError as exc:
                log.warning("could not resign (lease expires by itself): %s", exc)
        await self._stop("etcd-watch")
        self._feed.close()
        await self._notifier.close()
        await self._etcd.close()
        self._lease = None
        self._closed = True

    async def replicas(self) -> list[ReplicaInfo]:
        """Replicas alive now, read from etcd; raises Unavailable without it."""
        try:
            kvs, _, _ = await self._etcd.range_prefix(self._prefix + CORES)
        except EtcdError as exc:
            raise Unavailable(f"coordination (etcd) unavailable: {exc}") from exc
        out = []
        for kv in kvs:
            try:
                out.append(decode_replica(kv.value))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable replica key %r", bytes(kv.key))
        return sorted(out, key=lambda r: r.replica_id)

    def leader(self) -> LeaderInfo | None:
        """The leader as last observed; None while nobody can be seen to lead."""
        if self._closing or self._me is None:
            return None
        mine = self._leadership()
        if mine is not None:
            return mine
        lowest = self._mirror.lowest_candidate()
        if lowest is None or lowest.replica_id == self._me.replica_id:
            # Our own key, but not provably ours any more: nobody is known to lead.
            return None
        return LeaderInfo(lowest.replica_id, lowest.create_revision, f"etcd:{self._mirror.cluster_id:x}")

    def is_leader(self) -> bool:
        """True while this replica's campaign key is the lowest and its lease is fresh."""
        return self._leadership() is not None

    def on_leadership_change(self, callback: LeadershipCallback) -> None:
        """See `Coordinator.on_leadership_change`."""
        self._notifier.add(callback)

    async def healthy(self) -> bool:
        """Whether etcd answers a linearizable read within the health timeout."""
        try:
            await self._etcd.count(self._prefix + CORES, timeout=self._health_timeout)
        except EtcdError:
            return False
        return True

    # leadership

    def _caught_up_with_campaign(self) -> bool:
        """Whether the copy reached our campaign key's revision, so it shows if the key lives."""
        # Revisions of another cluster (etcd rebuilt from scratch) are not comparable.
        return (
            self._campaign_key is not None
            and self._mirror.cluster_id == self._campaign_cluster
            and self._mirror.revision >= self._campaign_revision
        )

    def _leadership(self) -> LeaderInfo | None:
        if self._closing or self._me is None or self._campaign_key is None:
            return None
        if time.monotonic() >= self._fresh_until:
            return None
        if not self._caught_up_with_campaign():
            return None
        lowest = self._mirror.lowest_candidate()
        if lowest is None or lowest.key != self._campaign_key:
            return None
        return LeaderInfo(self._me.replica_id, self._campaign_revision, f"etcd:{self._campaign_cluster:x}")

    async def _leadership_loop(self) -> None:
        """Announce leadership changes; wake up when the copy changes or freshness runs out."""
        while True:
            self._wake.clear()
            if (
                self._campaign_key is not None
                and self._caught_up_with_campaign()
                and not self._mirror.has_candidate(self._campaign_key)
            ):
                log.warning("campaign key gone (lease revoked or expired): campaigning again")
                self._lose_session()
            info = self._leadership()
            self._notifier.announce(info)
            timeout = max(0.0, self._fresh_until - time.monotonic()) if info else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    # session

    async def _join(self) -> None:
        """A new lease carrying this replica's key and a new campaign key."""
        assert self._me is not None
        if self._stale_lease is not None:
            # Its keys must not outlive the new ones; it may already be gone.
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(self._stale_lease)
            self._stale_lease = None
        sent = time.monotonic()
        lease, ttl = await self._etcd.grant(self._ttl)
        campaign_key = self._prefix + CAMPAIGN + f"{lease:x}".encode()
        operations = [
            put_op(self._prefix + CORES + self._me.replica_id.encode(), encode_replica(self._me), lease),
            put_op(campaign_key, json.dumps({"replica_id": self._me.replica_id}).encode(), lease),
        ]
        try:
            response = await self._etcd.txn(operations)
        except EtcdError:
            with contextlib.suppress(EtcdError):
                await self._etcd.revoke(lease)
            raise
        self._lease = lease
        self._campaign_key = campaign_key
        self._campaign_revision = int(response.header.revision)
        self._campaign_cluster = int(response.header.cluster_id)
        self._fresh_until = sent + ttl - self._margin
        self._wake.set()

    def _lose_session(self) -> None:
        if self._lease is not None:
            self._stale_lease = self._lease
        self._lease = None
        self._campaign_key = None
        self._campaign_revision = 0
        self._campaign_cluster = 0
        self._fresh_until = 0.0
        self._renew_now.set()
        self._wake.set()

    async def _session_loop(self) -> None:
        """Keep the replica lease alive through one keepalive stream; rejoin when it is lost."""
        retry = min(self._renew_interval, 0.5)
        wait = self._renew_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._renew_now.wait()
            self._renew_now.clear()
            wait = retry
            if self._lease is None:
                try:
                    await self._join()
                except EtcdError as exc:
                    log.warning("cannot rejoin the cluster: %s", exc)
                    continue
                wait = self._renew_interval
                continue
            lease = self._lease
            sent = time.monotonic()
            try:
                ttl = await self._keeper.renew(lease, self._op_timeout)
            except EtcdError as exc:
                log.warning("replica lease not renewed: %s", exc)
                continue
            if lease != self._lease:
                continue
            if ttl <= 0:
                log.warning("replica lease expired: campaigning again")
                self._lose_session()
                continue
            self._fresh_until = sent + ttl - self._margin
            self._wake.set()
            wait = self._renew_interval

    # the copy of the keyspace

    async def _resync(self) -> None:
        kvs, revision, cluster_id = await self._etcd.range_prefix(self._prefix)
        self._mirror.reset(kvs, revision, cluster_id)
        self._etcd.counters.resyncs += 1

    async def _watch_loop(self) -> None:
        """Follow the prefix from the copy's revision; list again after a compaction."""
        delay = 0.1
        while True:
            try:
                async for response in self._etcd.watch(
                    self._prefix, self._mirror.revision + 1, self._mirror.cluster_id
                ):
                    self._mirror.apply(response)
                    delay = 0.1
            except WatchCompacted as exc:
                log.warning("etcd watch restarts from a fresh listing: %s", exc)
                try:
                    await self._resync()
                    continue
                except EtcdError as resync_error:
                    log.warning("etcd listing failed: %s", resync_error)
            except EtcdError as exc:
                log.info("etcd watch interrupted: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # tasks

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        task.add_done_callback(self._task_done)
        self._tasks[name] = task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped", task.get_name(), exc_info=task.exception())

    async def _stop(self, *names: str) -> None:
        tasks = [t for n in names if (t := self._tasks.pop(n, None)) is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # A task that died of a bug was already logged by _task_done.
            _, stuck = await asyncio.wait(tasks, timeout=5.0)
            for task in stuck:
                log.error("%s did not stop when cancelled", task.get_name())
