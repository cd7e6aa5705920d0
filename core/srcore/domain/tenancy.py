"""Tenants, partitions, API tokens and audit events: entities and their rules. No I/O."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from srcore.domain import validation
from srcore.domain.errors import FailedPrecondition, InvalidArgument

MAX_CIDRS = 256
TOKEN_TTL_DEFAULT = timedelta(days=90)
TOKEN_TTL_MIN = timedelta(minutes=1)
TOKEN_TTL_MAX = timedelta(days=366)


class TenantState(enum.StrEnum):
    """Whether a tenant's edges and tokens are served."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant as stored."""

    name: str
    display_name: str
    state: TenantState
    created_at: datetime
    suspended_at: datetime | None = None
    suspend_reason: str = ""


@dataclass(frozen=True, slots=True)
class Partition:
    """A network segment of a tenant, with the CIDR ranges it covers."""

    tenant: str
    name: str
    description: str
    cidrs: tuple[str, ...]
    created_at: datetime
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token's stored metadata: `digest` is the SHA-256 of the secret, never the secret.

    `tenant` is None for a platform-admin token. `role` is a role name (security.rbac.Role).
    """

    token_id: str
    tenant: str | None
    role: str
    description: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    digest: str
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited call. `actor` names a credential, never a secret."""

    at: datetime
    actor: str
    tenant: str
    method: str
    target: str
    outcome: str
    message: str = ""
    peer: str = ""
    id: int = 0


def check_tenant_change(tenant: Tenant, target: TenantState) -> None:
    """Suspending a suspended tenant (or resuming an active one) is FAILED_PRECONDITION."""
    if tenant.state == target:
        raise FailedPrecondition(f"tenant {tenant.name!r} is already {target.value}")


def cidrs(field: str, values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validated CIDR ranges in canonical form, IPv4 before IPv6, each in address order.

    Host bits must be zero: "10.1.2.3/8" is a typo for a host or for "10.0.0.0/8", and guessing
    which would file devices under the wrong segment. Ranges may overlap other partitions'.
    """
    if len(values) > MAX_CIDRS:
        raise InvalidArgument(field, f"more than {MAX_CIDRS} ranges")
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, value in enumerate(values):
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            raise InvalidArgument(f"{field}[{i}]", f"not a CIDR range: {exc}") from None
        if network in networks:
            raise InvalidArgument(f"{field}[{i}]", f"duplicate range {network}")
        networks.append(network)
    networks.sort(key=lambda n: (n.version, n.network_address, n.prefixlen))
    return tuple(str(n) for n in networks)


def token_ttl(seconds: float | None) -> timedelta:
    """A token lifetime: the default when None, else within [1 minute, 366 days]."""
    if seconds is None:
        return TOKEN_TTL_DEFAULT
    ttl = timedelta(seconds=seconds)
    if not TOKEN_TTL_MIN <= ttl <= TOKEN_TTL_MAX:
        raise InvalidArgument("ttl", "must be between 1 minute and 366 days")
    return ttl


def display_name(value: str, default: str) -> str:
    """A display name of at most 255 characters; `default` when empty."""
    return validation.text("display_name", value, 255) or default
