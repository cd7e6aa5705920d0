"""A small etcd v3 client: aetcd's channel and generated stubs, with deadlines everywhere.

aetcd 1.0 is the client that imports beside protobuf 7 (upb). Its high-level helpers are
not used where they fall short: `refresh()` opens a new keepalive stream per call, the
transaction helper drops the response header (the revision the caller must wait for), range
requests cannot be paged at a fixed revision, and its watcher neither reports progress nor
survives compaction. This module speaks the etcd RPCs directly over aetcd's stubs instead
and turns every transport failure into `EtcdUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import rpc

log = logging.getLogger(__name__)

# etcd rejects client pings more often than every 5 s (--grpc-keepalive-min-time); a
# connection whose peer stopped answering pings is closed, which ends hung watch streams.
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
}

# Status codes that mean "the cluster cannot answer now": retry later, maybe elsewhere.
_UNAVAILABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

RANGE_PAGE = 1_000


class EtcdError(Exception):
    """etcd refused a request. `code` is the gRPC status code, when there was one."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """etcd did not answer in time or the connection failed; the request may be retried."""


class WatchCompacted(EtcdError):
    """The watch start revision was compacted away (or the cluster changed): list again."""


def _translate(exc: BaseException, what: str) -> EtcdError:
    if isinstance(exc, EtcdError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        message = f"{what}: {code.name} {exc.details() or ''}".rstrip()
        if code in _UNAVAILABLE_CODES:
            return EtcdUnavailable(message, code)
        return EtcdError(message, code)
    if isinstance(exc, TimeoutError):
        return EtcdUnavailable(f"{what}: no answer in time", grpc.StatusCode.DEADLINE_EXCEEDED)
    if isinstance(exc, aetcd.ClientError):
        return EtcdUnavailable(f"{what}: {exc}")
    return EtcdUnavailable(f"{what}: {exc!r}")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` or `http://host:port` to (host, port). TLS endpoints are not supported yet."""
    text = endpoint.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise ValueError(f"etcd endpoint {endpoint!r}: only plain http endpoints are supported")
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {endpoint!r}: no host")
    return parts.hostname, parts.port or 2379


@dataclass(slots=True)
class EtcdCounters:
    """What the adapter asked of etcd since it started, for tests, benchmarks and metrics."""

    unary_calls: int = 0
    """Request/response RPCs (range, txn, lease grant/revoke, status)."""
    keepalive_streams: int = 0
    """LeaseKeepAlive streams opened (each lives until the connection breaks)."""
    keepalive_requests: int = 0
    """Lease refreshes written into keepalive streams."""
    keepalive_responses: int = 0
    """Lease refreshes etcd answered."""
    watch_streams: int = 0
    """Watch streams opened."""
    touches: int = 0
    """Heartbeats recorded by the registry (no etcd traffic of their own)."""
    lease_refreshes: int = 0
    """Poller lease refreshes the registry wrote (a subset of keepalive_requests)."""
    refresh_batches: int = 0
    """Times the registry flushed its recorded touches as lease refreshes."""
    resyncs: int = 0
    """Full listings of the prefix (at start and after a compaction)."""


def put_op(key: bytes, value: bytes, lease: int = 0) -> Any:
    """A transaction operation that puts `key`."""
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete_op(key: bytes) -> Any:
    """A transaction operation that deletes `key`."""
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    end: bytes = aetcd.utils.prefix_range_end(prefix)
    return end


class EtcdClient:
    """Unary calls with a deadline, and the long-lived streams, over one aetcd connection.

    With several endpoints, a call that finds its endpoint unavailable moves the client to
    the next one; streams reopen there on their next attempt.
    """

    def __init__(
        self,
        endpoints: Iterable[str],
        *,
        op_timeout: float,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._endpoints = [parse_endpoint(e) for e in endpoints]
        if not self._endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self._username = username
        self._password = password
        self.op_timeout = op_timeout
        self.counters = EtcdCounters()
        self._index = 0
        self._client = self._new_client()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        """The endpoint in use."""
        host, port = self._endpoints[self._index]
        return f"{host}:{port}"

    def _new_client(self) -> Any:
        host, port = self._endpoints[self._index]
        return aetcd.Client(
            host,
            port,
            username=self._username,
            password=self._password,
            timeout=self.op_timeout,
            options=_CHANNEL_OPTIONS,
        )

    async def connected(self) -> Any:
        """The aetcd client, connected (stubs and auth metadata ready)."""
        client = self._client
        try:
            async with asyncio.timeout(self.op_timeout):
                await client.connect()
        except Exception as exc:
            self.failed(client)
            raise _translate(exc, f"connect {self.endpoint}") from exc
        return client

    def failed(self, client: Any) -> None:
        """Move to the next endpoint after `client` failed, unless another caller already did."""
        if self._closed or len(self._endpoints) == 1 or client is not self._client:
            return
        self._index = (self._index + 1) % len(self._endpoints)
        self._client = self._new_client()
        log.warning("etcd: switching to endpoint %s", self.endpoint)
        task = asyncio.get_running_loop().create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def unary(self, stub: str, method: str, request: Any, timeout: float | None = None) -> Any:
        """Call `<stub>.<method>(request)` with a deadline; raises EtcdError/EtcdUnavailable.

        When the endpoint is unavailable the call is tried once on each other endpoint.
        Every request made here may be repeated: puts and deletes are idempotent, and a
        lease granted by an attempt whose answer was lost expires after its TTL.
        """
        for attempt in range(len(self._endpoints)):
            client = await self.connected()
            self.counters.unary_calls += 1
            call = getattr(getattr(client, stub), method)
            try:
                return await call(request, timeout=timeout or self.op_timeout, metadata=client.metadata)
            except Exception as exc:
                error = _translate(exc, method)
                if not isinstance(error, EtcdUnavailable):
                    raise error from exc
                self.failed(client)
                if attempt == len(self._endpoints) - 1:
                    raise error from exc
        raise AssertionError("unreachable: there is at least one endpoint")

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of `ttl` seconds: (lease id, TTL etcd granted)."""
        response = await self.unary("leasestub", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise EtcdError(f"LeaseGrant: {response.error}")
        return int(response.ID), int(response.TTL)

    async def revoke(self, lease_id: int) -> bool:
        """Revoke a lease (its keys go with it). False when it no longer existed."""
        try:
            await self.unary("leasestub", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id))
        except EtcdError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def txn(self, success: list[Any], compare: list[Any] | None = None) -> Any:
        """Run a transaction; returns the TxnResponse (header.revision is its revision)."""
        request = rpc.TxnRequest(compare=compare or [], success=success, failure=[])
        return await self.unary("kvstub", "Txn", request)

    async def range_prefix(self, prefix: bytes) -> tuple[list[Any], int, int]:
        """Every key under `prefix`, read in pages at one revision.

        Returns (key-values ordered by key, revision, cluster id).
        """
        end = prefix_end(prefix)
        kvs: list[Any] = []
        revision = 0
        cluster_id = 0
        start = prefix
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=RANGE_PAGE, revision=revision)
            response = await self.unary("kvstub", "Range", request)
            if revision == 0:
                revision = int(response.header.revision)
                cluster_id = int(response.header.cluster_id)
            kvs.extend(response.kvs)
            if not response.more or not response.kvs:
                return kvs, revision, cluster_id
            start = bytes(response.kvs[-1].key) + b"\0"

    async def count(self, prefix: bytes, timeout: float | None = None) -> int:
        """How many keys are under `prefix` (a linearizable read: proves a quorum answers)."""
        request = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        response = await self.unary("kvstub", "Range", request, timeout=timeout)
        return int(response.count)

    async def watch(self, prefix: bytes, start_revision: int, cluster_id: int) -> AsyncIterator[Any]:
        """Watch every key under `prefix` from `start_revision`, yielding WatchResponses.

        Raises WatchCompacted when that revision is gone or the cluster is another one
        (its id changed), EtcdUnavailable when the stream breaks.
        """
        client = await self.connected()
        self.counters.watch_streams += 1
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            create = rpc.WatchCreateRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                start_revision=start_revision,
                progress_notify=True,
            )
            async with asyncio.timeout(self.op_timeout):
                await call.write(rpc.WatchRequest(create_request=create))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise EtcdUnavailable("watch stream ended")
                if cluster_id and response.header.cluster_id not in (0, cluster_id):
                    raise WatchCompacted("etcd cluster id changed")
                if response.compact_revision:
                    raise WatchCompacted(f"revision compacted below {response.compact_revision}")
                if response.canceled:
                    raise EtcdUnavailable(f"watch canceled: {response.cancel_reason}")
                yield response
        except EtcdError:
            raise
        except Exception as exc:
            error = _translate(exc, "Watch")
            if isinstance(error, EtcdUnavailable):
                self.failed(client)
            raise error from exc
        finally:
            call.cancel()

    async def keepalive(self) -> tuple[Any, Any]:
        """Open a LeaseKeepAlive stream (no deadline: long-lived): (aetcd client, call)."""
        client = await self.connected()
        self.counters.keepalive_streams += 1
        return client, client.leasestub.LeaseKeepAlive(metadata=client.metadata)

    async def close(self) -> None:
        """Close the connection."""
        self._closed = True
        with contextlib.suppress(Exception):
            await self._client.close()


class KeepAliveStream:
    """Refreshes leases through ONE long-lived LeaseKeepAlive stream.

    A stream answers about ten thousand refreshes a second where opening one per refresh
    (aetcd's `refresh()`) manages about one to two thousand. `send` is fire-and-forget; `renew`
    waits for etcd's answer. When the stream breaks, refreshes that were written but not
    answered are handed to `on_lost` so their owner can send them again, and the next call
    opens a new stream.
    """

    def __init__(
        self,
        client: EtcdClient,
        name: str,
        on_response: Callable[[int, int], None] | None = None,
        on_lost: Callable[[set[int]], None] | None = None,
    ) -> None:
        self._client = client
        self._name = name
        self._on_response = on_response
        self._on_lost = on_lost
        self._connection: Any = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._waiters: dict[int, deque[asyncio.Future[int]]] = {}
        self._unanswered: dict[int, int] = {}
        self._last_answer = time.monotonic()

    async def send(self, lease_id: int) -> None:
        """Write a refresh of `lease_id`; raises EtcdUnavailable when it cannot be written."""
        self._check_stalled()
        await self._write(lease_id)
        self._unanswered[lease_id] = self._unanswered.get(lease_id, 0) + 1

    async def renew(self, lease_id: int, timeout: float) -> int:
        """Refresh `lease_id` and wait for etcd's answer: its TTL, 0 or less when it is gone."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease_id, deque()).append(future)
        try:
            await self._write(lease_id)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            # No answer in time on a live connection means a stuck stream: start afresh.
            self._broken(EtcdUnavailable(f"{self._name}: keepalive not answered in time"))
            raise EtcdUnavailable(f"{self._name}: keepalive not answered in time") from exc
        finally:
            queue = self._waiters.get(lease_id)
            if queue is not None and future in queue:
                queue.remove(future)
                if not queue:
                    del self._waiters[lease_id]
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                # Its error was raised above (or it succeeded); mark it as seen.
                future.exception()

    async def close(self) -> None:
        """Close the stream; pending refreshes are dropped."""
        self._on_lost = None
        self._broken(EtcdError(f"{self._name}: closed"))
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
            self._reader = None

    def _check_stalled(self) -> None:
        if (
            self._call is not None
            and self._unanswered
            and time.monotonic() - self._last_answer > 2 * self._client.op_timeout
        ):
            self._broken(EtcdUnavailable(f"{self._name}: keepalive answers stopped"))

    async def _write(self, lease_id: int) -> None:
        async with self._write_lock:
            if self._call is None:
                self._connection, self._call = await self._client.keepalive()
                self._last_answer = time.monotonic()
                self._reader = asyncio.get_running_loop().create_task(
                    self._read(self._call), name=f"{self._name}-reader"
                )
            call = self._call
            try:
                async with asyncio.timeout(self._client.op_timeout):
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            except Exception as exc:
                error = _translate(exc, f"{self._name} keepalive")
                if call is self._call:
                    self._broken(error)
                raise error from exc
            self._client.counters.keepalive_requests += 1

    async def _read(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise EtcdUnavailable(f"{self._name}: keepalive stream ended")
                self._answered(int(response.ID), int(response.TTL))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if call is self._call:
                self._broken(_translate(exc, f"{self._name} keepalive"))

    def _answered(self, lease_id: int, ttl: int) -> None:
        self._last_answer = time.monotonic()
        self._client.counters.keepalive_responses += 1
        count = self._unanswered.get(lease_id)
        if count is not None:
            if count <= 1:
                del self._unanswered[lease_id]
            else:
                self._unanswered[lease_id] = count - 1
        queue = self._waiters.get(lease_id)
        if queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(ttl)
        if self._on_response is not None:
            self._on_response(lease_id, ttl)

    def _broken(self, error: EtcdError) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
            log.debug("%s: keepalive stream closed: %s", self._name, error)
            if isinstance(error, EtcdUnavailable):
                self._client.failed(self._connection)
        for queue in self._waiters.values():
            for future in queue:
                if not future.done():
                    future.set_exception(error)
        lost = set(self._unanswered)
        self._unanswered.clear()
        if lost and self._on_lost is not None:
            self._on_lost(lost)
