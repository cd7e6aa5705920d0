"""Onboarding packages: the state machine and what an edge presenting a package's certificate
may do. No I/O.

    issued --download--> delivered --first RegisterPoller--> activated
      |                    |                                    |
      +--> expired <-------+  (TTL passed, leader job)          |
      +--> revoked <-------+------------------------------------+
    issued, delivered, expired and revoked packages can be deleted; activated ones are revoked
    first, so deleting never silently leaves a working certificate behind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from srcore.domain.errors import FailedPrecondition, InvalidArgument, Unauthenticated

PACKAGE_TTL_MIN = timedelta(minutes=1)
PACKAGE_TTL_MAX = timedelta(days=30)


class PackageState(enum.StrEnum):
    """Where a package is in its life."""

    ISSUED = "issued"
    DELIVERED = "delivered"
    ACTIVATED = "activated"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DELETED = "deleted"


TRANSITIONS: dict[PackageState, frozenset[PackageState]] = {
    PackageState.ISSUED: frozenset(
        {PackageState.DELIVERED, PackageState.EXPIRED, PackageState.REVOKED, PackageState.DELETED}
    ),
    PackageState.DELIVERED: frozenset(
        {PackageState.ACTIVATED, PackageState.EXPIRED, PackageState.REVOKED, PackageState.DELETED}
    ),
    PackageState.ACTIVATED: frozenset({PackageState.REVOKED}),
    PackageState.EXPIRED: frozenset({PackageState.DELETED}),
    PackageState.REVOKED: frozenset({PackageState.DELETED}),
    PackageState.DELETED: frozenset(),
}

# States whose package expires when its TTL passes.
PENDING = frozenset({PackageState.ISSUED, PackageState.DELIVERED})


@dataclass(frozen=True, slots=True)
class Package:
    """A package as stored; the private key is not part of it."""

    package_id: str
    tenant: str
    partition: str
    poller_id: str
    state: PackageState
    spiffe_id: str
    cert_serial: str
    cert_not_after: datetime
    created_by: str
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None
    activated_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str = ""

    def effective_state(self, now: datetime) -> PackageState:
        """The state, counting a pending package past its TTL as expired before the job runs."""
        if self.state in PENDING and now >= self.expires_at:
            return PackageState.EXPIRED
        return self.state


def check_transition(package: Package, target: PackageState, now: datetime) -> None:
    """Raise FailedPrecondition unless `package` may move to `target` at `now`."""
    current = package.effective_state(now)
    if target not in TRANSITIONS[current]:
        hint = (
            " (revoke it first)"
            if current is PackageState.ACTIVATED and target is PackageState.DELETED
            else ""
        )
        raise FailedPrecondition(
            f"package {package.package_id} is {current.value}: it cannot become {target.value}{hint}"
        )


def admit_edge(package: Package, now: datetime) -> None:
    """Refuse an edge call made with the certificate of a package that is not (or no longer) good.

    Only a delivered or activated package's certificate is accepted. An issued package's key
    never left the server, so its certificate in use means something is wrong.
    """
    state = package.effective_state(now)
    if state in (PackageState.DELIVERED, PackageState.ACTIVATED):
        return
    reasons = {
        PackageState.ISSUED: "has not been downloaded",
        PackageState.EXPIRED: "expired before it was activated",
        PackageState.REVOKED: "was revoked",
        PackageState.DELETED: "was deleted",
    }
    raise Unauthenticated(
        f"client certificate (serial {package.cert_serial}) belongs to onboarding package "
        f"{package.package_id}, which {reasons[state]}"
    )


def package_ttl(seconds: float | None, default: timedelta) -> timedelta:
    """The time a package has to be downloaded and activated."""
    if seconds is None:
        return default
    ttl = timedelta(seconds=seconds)
    if not PACKAGE_TTL_MIN <= ttl <= PACKAGE_TTL_MAX:
        raise InvalidArgument("ttl", "must be between 1 minute and 30 days")
    return ttl


def serial_hex(serial: int) -> str:
    """A certificate serial as stored and shown: lower-case hex without leading zeros."""
    return f"{serial:x}"
