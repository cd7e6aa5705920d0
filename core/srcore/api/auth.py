"""Who is calling: the peer identity from the verified client certificate."""

from __future__ import annotations

from srcore.api.context import Context
from srcore.domain.errors import PermissionDenied, Unauthenticated
from srcore.security.identity import IdentityKind, PeerIdentity, identity_from_auth_context


def peer_identity(context: Context, trust_domain: str) -> PeerIdentity | None:
    """The caller's certificate identity, or None when it presented no certificate."""
    return identity_from_auth_context(context.auth_context(), trust_domain)


def require_edge(context: Context, trust_domain: str) -> PeerIdentity:
    """The edge identity of the caller; edge RPCs accept nothing else."""
    identity = peer_identity(context, trust_domain)
    if identity is None:
        raise Unauthenticated("edge RPCs need a client certificate")
    if identity.kind is not IdentityKind.EDGE or identity.tenant is None or identity.poller_id is None:
        raise PermissionDenied(f"{identity.spiffe_id} is not an edge (poller) identity")
    return identity


def require_operator(context: Context, trust_domain: str) -> PeerIdentity:
    """The operator identity of the caller; edge certificates cannot use the admin API."""
    identity = peer_identity(context, trust_domain)
    if identity is None:
        raise Unauthenticated("admin RPCs need an operator certificate")
    if identity.kind is not IdentityKind.OPERATOR:
        raise PermissionDenied(f"{identity.spiffe_id} is not an operator identity")
    return identity
