"""Access control state of a replica: who callers are, whether their tenant and credentials are
still good, the audit log, and the onboarding package material.

Checks that run on every call read through short-lived caches (`auth_cache_ttl`, default 5 s):
a revocation or suspension made on this replica applies at once, on the others within that
time (at most twice it for a caller quiet meanwhile, see ReadThroughCache). Token last-use
times are kept in memory and written in batches, so a busy token costs no database write per
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from srcore.domain.coordination import LeaderInfo
from srcore.domain.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from srcore.domain.packages import Package, admit_edge, serial_hex
from srcore.domain.tenancy import ApiToken, AuditEvent, TenantState
from srcore.security import crypto, tokens
from srcore.security.identity import PeerIdentity
from srcore.security.pki import load_or_create_ca
from srcore.security.principal import Principal, PrincipalKind
from srcore.security.rbac import Role
from srcore.security.signing import PackageSigner, load_signing_ca, require_trusted
from srcore.settings import Settings
from srcore.store.audit import AuditRepository
from srcore.store.database import Database
from srcore.store.packages import PackageRepository
from srcore.store.tenancy import TenantRepository
from srcore.store.tokens import TokenRepository

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

# Bounds each cache: a stream of fresh credentials (or garbage) cannot grow memory without end.
CACHE_SIZE = 10_000
LAST_USED_FLUSH_INTERVAL = 5.0
EXPIRY_SWEEP_INTERVAL = 30.0


class ReadThroughCache(Generic[K, V]):
    """A bounded cache in front of a store read, for checks made on every call.

    An entry younger than `ttl` is answered from memory. One between `ttl` and twice `ttl` is
    answered too, while a single background read replaces it: when a fleet's tenant expires,
    its heartbeats must not all wait on the store, nor each send it a query (a stampede of
    hundreds of reads queued on the pool held heartbeats for ~0.5 s once per `ttl`). Older
    entries, and keys never read, wait for the read; concurrent callers share one.
    """

    def __init__(
        self,
        ttl: float,
        load: Callable[[K], Awaitable[V]],
        size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._load = load
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._reads: dict[K, asyncio.Future[V]] = {}
        # Bumped by forget(): a read started before a change must not store what it read.
        self._epoch = 0

    async def get(self, key: K) -> V:
        """The value for `key`, from memory when fresh enough, else from the store."""
        entry = self._entries.get(key)
        if entry is not None:
            age = self._clock() - entry[0]
            if age < self._ttl:
                return entry[1]
            if age < 2 * self._ttl:
                if key not in self._reads:
                    self._read(key).add_done_callback(_log_failed_refresh)
                return entry[1]
        return await asyncio.shield(self._read(key))

    def _read(self, key: K) -> asyncio.Future[V]:
        read = self._reads.get(key)
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self._read_and_store(key, self._epoch))
        return read

    async def _read_and_store(self, key: K, epoch: int) -> V:
        try:
            value = await self._load(key)
        finally:
            if self._reads.get(key) is asyncio.current_task():
                del self._reads[key]
        if self._epoch == epoch:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value

    def forget(self, key: K) -> None:
        """Drop `key` after a change made here, so the next call reads the store again."""
        self._entries.pop(key, None)
        self._reads.pop(key, None)
        self._epoch += 1


def _log_failed_refresh(read: asyncio.Future[Any]) -> None:
    # A failed background refresh leaves the entry to expire; callers then read themselves.
    if not read.cancelled() and read.exception() is not None:
        log.warning("access cache refresh failed: %s", read.exception())


class TenantStates:
    """Tenant states, cached briefly: every edge call and every token call checks one."""

    def __init__(self, repository: TenantRepository, ttl: float) -> None:
        self._cache: ReadThroughCache[str, TenantState | None] = ReadThroughCache(
            ttl, repository.tenant_state
        )

    async def require_active(self, tenant: str) -> None:
        """PermissionDenied unless the tenant exists and is active."""
        state = await self._cache.get(tenant)
        if state is None:
            raise PermissionDenied(f"tenant {tenant!r} does not exist")
        if state is not TenantState.ACTIVE:
            raise PermissionDenied(f"tenant {tenant!r} is {state.value}")

    def forget(self, tenant: str) -> None:
        """Drop the cached state after a change made on this replica."""
        self._cache.forget(tenant)


class Authenticator:
    """Turns bearer tokens and operator certificates into principals. Whether the principal's
    tenant is active is the interceptor's next question, not this one's."""

    def __init__(
        self,
        tokens_repo: TokenRepository,
        packages_repo: PackageRepository,
        clock: Callable[[], datetime],
        ttl: float,
    ) -> None:
        self._packages = packages_repo
        self._clock = clock
        self._cache: ReadThroughCache[str, ApiToken | None] = ReadThroughCache(ttl, tokens_repo.get)
        self._last_used: dict[str, datetime] = {}

    async def from_bearer(self, presented: tokens.PresentedToken) -> Principal:
        """The principal of a well-formed bearer token, or Unauthenticated/PermissionDenied."""
        if presented.kind is tokens.TokenKind.DOWNLOAD:
            return await self._download(presented)
        token = await self._cache.get(presented.token_id)
        # One answer for "no such id" and "wrong secret": an id alone proves nothing.
        if token is None or not tokens.same_digest(presented.digest, token.digest):
            raise Unauthenticated("unknown API token")
        now = self._clock()
        if token.revoked_at is not None:
            raise Unauthenticated(f"API token {token.token_id} was revoked")
        if now >= token.expires_at:
            raise Unauthenticated(f"API token {token.token_id} expired at {token.expires_at.isoformat()}")
        self._last_used[token.token_id] = now
        return Principal(PrincipalKind.TOKEN, token.token_id, Role(token.role), token.tenant)

    async def _download(self, presented: tokens.PresentedToken) -> Principal:
        # Never cached: the token is single-use, and the download itself re-checks the state.
        found = await self._packages.download_digest(presented.token_id)
        if found is None or not tokens.same_digest(presented.digest, found[1]):
            raise Unauthenticated("unknown or spent download token")
        package = found[0]
        if package.effective_state(self._clock()) is not package.state:
            raise Unauthenticated(f"package {package.package_id} expired before it was downloaded")
        return Principal(PrincipalKind.DOWNLOAD, package.package_id, Role.PACKAGE_DOWNLOAD, package.tenant)

    @staticmethod
    def from_certificate(identity: PeerIdentity) -> Principal:
        """The principal of an operator certificate (the TLS handshake verified it)."""
        assert identity.role is not None
        return Principal(PrincipalKind.CERTIFICATE, identity.spiffe_id, Role(identity.role), identity.tenant)

    def forget(self, token_id: str) -> None:
        """Drop a cached token after it was revoked on this replica."""
        self._cache.forget(token_id)

    async def flush_last_used(self, repository: TokenRepository) -> int:
        """Write the last-use times gathered since the previous flush; returns how many."""
        pending, self._last_used = self._last_used, {}
        if not pending:
            return 0
        try:
            await repository.record_last_used(pending)
        except Exception:
            # Keep them for the next flush unless a newer use arrived meanwhile.
            for token_id, at in pending.items():
                self._last_used.setdefault(token_id, at)
            raise
        return len(pending)


class EdgeGate:
    """What every edge call passes: an active tenant and, for a package certificate, a package
    that is delivered or activated (the revocation list is the packages table).

    The packages are held in memory, keyed by certificate serial, and refreshed with the rows
    changed since the last refresh once the index is `ttl` seconds old, so an edge call never
    waits on the store (heartbeats at fleet scale must not cost a query each) and a revocation
    made on any replica is enforced everywhere within about `ttl`.
    """

    # Rows committed a little after the clock time they carry are still picked up.
    OVERLAP = timedelta(seconds=30)

    def __init__(
        self,
        packages_repo: PackageRepository,
        tenant_states: TenantStates,
        clock: Callable[[], datetime],
        ttl: float,
    ) -> None:
        self._packages = packages_repo
        self._tenants = tenant_states
        self._clock = clock
        self._ttl = ttl
        self._index: dict[str, Package] = {}
        self._loaded_at: datetime | None = None
        self._refreshed = -math.inf
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._sync_refresh: asyncio.Future[None] | None = None
        self._stale = False

    async def _refresh(self) -> None:
        # One refresh at a time: a slow one finishing after a newer one must not put back
        # older states (a revocation would be undone on this replica until the next refresh).
        async with self._refresh_lock:
            started = self._clock()
            since = self._loaded_at - self.OVERLAP if self._loaded_at is not None else None
            for package in await self._packages.changed_since(since):
                known = self._index.get(package.cert_serial)
                if known is None or known.updated_at <= package.updated_at:
                    self._index[package.cert_serial] = package
            self._loaded_at = started
            self._refreshed = time.monotonic()

    async def _package(self, serial: str) -> Package | None:
        if self._loaded_at is None or self._stale or self._sync_refresh is not None or self._ttl <= 0:
            # First use, a change made here, or no caching wanted: read before answering.
            await self._refresh_now()
        elif time.monotonic() - self._refreshed >= self._ttl and self._refreshing is None:
            # Refresh in the background: callers meanwhile use an index at most ~ttl old.
            self._refreshing = asyncio.create_task(self._refresh_in_background())
        return self._index.get(serial)

    async def _refresh_now(self) -> None:
        # Every caller that needs a fresh index waits for the same refresh, so none of them
        # answers from the index while another is still re-reading it.
        task = self._sync_refresh
        if task is None:
            self._stale = False
            task = self._sync_refresh = asyncio.ensure_future(self._refresh())

            def done(finished: asyncio.Future[None]) -> None:
                if self._sync_refresh is finished:
                    self._sync_refresh = None

            task.add_done_callback(done)
        await asyncio.shield(task)

    async def _refresh_in_background(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:
            log.warning("package index refresh failed, will retry: %s", exc)
        finally:
            self._refreshing = None

    async def admit(self, identity: PeerIdentity) -> None:
        """Refuse an edge whose tenant is not active or whose package certificate is not good."""
        assert identity.tenant is not None
        await self._tenants.require_active(identity.tenant)
        package = await self._package(serial_hex(identity.serial))
        if package is None:
            return
        if (package.tenant, package.poller_id) != (identity.tenant, identity.poller_id):
            # Only a compromised signing CA could mint this: refuse rather than trust the SAN.
            raise PermissionDenied(f"certificate serial {package.cert_serial} was issued for another poller")
        admit_edge(package, self._clock())

    async def registered(self, identity: PeerIdentity) -> Package | None:
        """After a successful RegisterPoller: activate the certificate's package if it is due.

        Returns the package when this call activated it.
        """
        serial = serial_hex(identity.serial)
        package = await self._package(serial)
        if package is None or package.activated_at is not None:
            return None
        activated = await self._packages.activate(serial, self._clock())
        if activated is not None:
            self._index[serial] = activated
        return activated

    def forget(self, serial: str) -> None:
        """A package changed on this replica: the next edge call re-reads the index first."""
        self._stale = True
        # A refresh already under way may have read before the change: the next caller
        # starts a new one (refreshes run one after another).
        self._sync_refresh = None


class AuditLog:
    """Writes audit events. A failed write is logged, never turned into a failed call: the
    mutation it describes has already been committed."""

    def __init__(self, repository: AuditRepository) -> None:
        self.repository = repository

    async def record(self, event: AuditEvent) -> None:
        """Append one event."""
        try:
            await self.repository.append(event)
        except Exception as exc:
            log.error(
                "audit write failed for %s %s by %s (%s): %s",
                event.method, event.outcome, event.actor, event.target, type(exc).__name__,
            )  # fmt: skip


def package_core_address(settings: Settings, port: int) -> str:
    """The address onboarding bundles tell pollers to dial."""
    if settings.package_core_address:
        return settings.package_core_address
    if settings.advertise_address:
        return settings.advertise_address
    return f"{settings.listen.rpartition(':')[0]}:{port}"


class Access:
    """The repositories, caches and keys behind authentication, authorisation, tenancy, tokens,
    packages and audit, built once per replica."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], datetime],
        replica_id: str,
        fencing_token: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.tenants = TenantRepository(db, replica_id, fencing_token)
        self.tokens = TokenRepository(db)
        self.packages = PackageRepository(db, replica_id, fencing_token)
        self.audit = AuditLog(AuditRepository(db))
        ttl = settings.auth_cache_ttl
        self.tenant_states = TenantStates(self.tenants, ttl)
        self.authenticator = Authenticator(self.tokens, self.packages, clock, ttl)
        self.edge_gate = EdgeGate(self.packages, self.tenant_states, clock, ttl)
        self.package_ttl = timedelta(seconds=settings.package_ttl)
        self.core_address = ""
        self._keyring: crypto.Keyring | None = None
        self._signer: PackageSigner | None = None

    def prepare(self, client_ca_pem: bytes, port: int) -> None:
        """Load the secret keys and the package signing CA; called once the port is bound.

        Raises InvalidArgument for a misconfiguration, so it stops the start-up.
        """
        settings = self.settings
        self.core_address = package_core_address(settings, port)
        if settings.secret_keys:
            self._keyring = crypto.keyring(settings.secret_keys)
        else:
            self._keyring = crypto.load_or_create_key_file(settings.data_dir)
        validity = timedelta(days=settings.package_cert_days)
        if settings.package_ca_cert:
            ca = load_signing_ca(Path(settings.package_ca_cert), Path(settings.package_ca_key))
            require_trusted(ca, client_ca_pem)
            server_ca = (
                Path(settings.package_server_ca).read_bytes() if settings.package_server_ca else client_ca_pem
            )
            self._signer = PackageSigner(ca, server_ca, settings.trust_domain, validity)
        elif settings.embedded_tls:
            # The development CA signs the server certificate and is the client CA: one file
            # serves the edge both ways.
            ca = load_or_create_ca(settings.data_dir / "pki", "unused: ensure_dev_pki created it")
            self._signer = PackageSigner(ca, ca.cert_pem, settings.trust_domain, validity)

    @property
    def keyring(self) -> crypto.Keyring:
        """The keys sealing package private keys at rest."""
        if self._keyring is None:
            raise FailedPrecondition("secret keys are not loaded yet")
        return self._keyring

    @property
    def signer(self) -> PackageSigner:
        """The package signing CA; FailedPrecondition when none is configured."""
        if self._signer is None:
            raise FailedPrecondition(
                "onboarding packages need a signing CA: set package_ca_cert and package_ca_key"
            )
        return self._signer

    async def flush_last_used(self) -> None:
        """Write pending token last-use times, logging (not raising) a failure."""
        try:
            await self.authenticator.flush_last_used(self.tokens)
        except Exception as exc:
            log.warning("token last-use write failed, will retry: %s", type(exc).__name__)

    async def expire_packages(self, leader: LeaderInfo) -> list[Package]:
        """Expire pending packages past their TTL (a leader job); returns those expired.

        Raises Fenced when a later leadership has written (this replica was deposed).
        """
        expired = await self.packages.expire_due(self.clock(), leader)
        for package in expired:
            self.edge_gate.forget(package.cert_serial)
        if expired:
            log.info("expired %d onboarding packages", len(expired))
        return expired

    async def run(self, stopping: asyncio.Event) -> None:
        """Background work until `stopping`: token last-use flushes. (The package expiry sweep
        is a leader job: app.py runs `expire_packages` every EXPIRY_SWEEP_INTERVAL.)"""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LAST_USED_FLUSH_INTERVAL):
                    await stopping.wait()
            await self.flush_last_used()
