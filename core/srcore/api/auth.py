"""Who is calling: the peer identity from the verified client certificate, and the admin
principal the authz interceptor resolved."""

from __future__ import annotations

from srcore.api.context import Context
from srcore.domain.errors import PermissionDenied, Unauthenticated
from srcore.security.identity import IdentityKind, PeerIdentity, identity_from_auth_context
from srcore.security.principal import Principal, caller


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


def require_operator(context: Context, trust_domain: str) -> Principal:
    """The admin principal of the call (bearer token or operator certificate).

    `srcore.api.authz.AuthzInterceptor` authenticated and authorised the call against the
    permission matrix before the servicer ran; this only hands over the principal it resolved
    (`context` and `trust_domain` are not consulted). New servicers call
    `srcore.security.principal.caller()` directly.
    """
    return caller()
