"""Who is calling an admin RPC, and the tenant scope that follows from it.

The authz interceptor resolves the principal once per call and keeps it, with what the call
is about, in a context variable; servicers read it with `caller()` and limit every read and
write with `Principal.scope`. grpc.aio runs each RPC in its own task, and a task owns a copy of
the context, so one call's principal can never be seen by another.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass

from srcore.domain import validation
from srcore.domain.errors import NotFound, Unauthenticated
from srcore.security.rbac import Role

# The tenant a platform-wide principal acts in when a request names none, matching the
# embedded default's single tenant.
DEFAULT_TENANT = "default"


class PrincipalKind(enum.StrEnum):
    """How the principal proved who it is."""

    TOKEN = "token"
    CERTIFICATE = "cert"
    DOWNLOAD = "download"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller of the admin API.

    `tenant` is None for platform-wide principals (platform admins). `credential_id` is the
    token id, the certificate's SPIFFE ID or the package id of a download token.
    """

    kind: PrincipalKind
    credential_id: str
    role: Role
    tenant: str | None

    @property
    def actor(self) -> str:
        """How the audit log names this principal, e.g. "token:abcd2345efgh"."""
        return f"{self.kind.value}:{self.credential_id}"

    @property
    def platform_wide(self) -> bool:
        """True for a principal that is not confined to one tenant."""
        return self.tenant is None

    def scope(self, requested: str, *, all_tenants: bool = False) -> str | None:
        """The tenant a call may touch, given the tenant the request names ("" for none).

        A tenant principal only ever gets its own tenant; naming another is NOT_FOUND, the same
        answer as for a tenant that does not exist, so nothing leaks. A platform principal gets
        what it names, else every tenant (None) when `all_tenants`, else the default tenant.
        """
        if requested:
            validation.slug("tenant", requested)
        if self.tenant is not None:
            if requested not in ("", self.tenant):
                raise NotFound(f"tenant {requested!r} not found")
            return self.tenant
        if requested:
            return requested
        return None if all_tenants else DEFAULT_TENANT

    def tenant_for(self, requested: str) -> str:
        """The one tenant a call acts in (see `scope`)."""
        tenant = self.scope(requested)
        assert tenant is not None  # scope() returns None only when all_tenants is asked for
        return tenant

    def sees(self, tenant: str | None) -> bool:
        """Whether this principal may see a record of `tenant` (None: platform-wide records)."""
        return self.tenant is None or self.tenant == tenant


@dataclass(slots=True)
class CallRecord:
    """What the audit log says about the call in progress; servicers may refine it.

    `actor` names the credential as soon as one is recognised (before it is verified, so a
    revoked token's attempts carry its id). `target` and `tenant` start from the request fields
    the permission matrix names; a servicer that learns more (the id of what it created, the
    tenant of the token it revoked) updates them through `note`.
    """

    method: str
    principal: Principal | None
    actor: str
    target: str
    tenant: str


_CALL: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("srcore_call", default=None)


def begin_call(record: CallRecord) -> None:
    """Make `record` the current call's (the interceptor does this before the servicer runs)."""
    _CALL.set(record)


def caller() -> Principal:
    """The authenticated principal of the current call.

    Raises Unauthenticated when there is none, so a servicer wired without the interceptor
    fails closed instead of serving anonymous callers.
    """
    record = _CALL.get()
    if record is None or record.principal is None:
        raise Unauthenticated("no authenticated principal for this call")
    return record.principal


def note(*, target: str | None = None, tenant: str | None = None) -> None:
    """Refine the audit target or tenant of the current call.

    A tenant principal's calls stay filed under its own tenant, whatever they touched.
    """
    record = _CALL.get()
    if record is None:
        return
    if target is not None:
        record.target = target
    if tenant is not None and (record.principal is None or record.principal.platform_wide):
        record.tenant = tenant
