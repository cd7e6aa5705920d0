"""Peer identity from client certificates: strict SPIFFE ID parsing, cached per certificate.

Three identity forms are accepted, nothing else:

- edge poller:               ``spiffe://<td>/tenant/<tenant>/poller/<poller>``
- tenant operator:           ``spiffe://<td>/tenant/<tenant>/operator/<name>/role/<role>``
- platform-wide operator:    ``spiffe://<td>/operator/<name>/role/<role>``

Segments follow the same rules as the registry (`srcore.domain.validation`), so any identity a
certificate can carry is one the registry accepts.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509

from srcore.domain import validation
from srcore.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated

ROLES = frozenset({"viewer", "operator", "admin", "platform-admin"})
PLATFORM_ADMIN = "platform-admin"

_SCHEME = "spiffe://"
# The SPIFFE specification caps an ID at 2048 bytes; longer input is refused before any work.
_MAX_SPIFFE_ID = 2048
# Visible ASCII only. Checked on the whole ID because the segment patterns end in `$`, which
# also matches before a trailing newline.
_VISIBLE_ASCII = re.compile(r"[!-~]*")
# Called on every RPC with the peer's leaf certificate. The bound must exceed the pollers one
# replica serves: heartbeats visit them in a cycle, and an LRU cycled over one key more than it
# holds misses every time (each miss parses a certificate). It also keeps a stream of fresh
# certificates from growing memory (~2 KB per entry).
_CACHE_SIZE = 50_000
# grpc's auth context property holding the peer's leaf certificate.
_PEM_PROPERTY = "x509_pem_cert"


class IdentityKind(enum.StrEnum):
    """Who is on the other end of a connection."""

    EDGE = "edge"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """The fields of an accepted SPIFFE ID."""

    kind: IdentityKind
    trust_domain: str
    tenant: str | None
    poller_id: str | None
    operator: str | None
    role: str | None
    spiffe_id: str


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """An authenticated peer: its SPIFFE identity plus the certificate it was read from.

    `tenant` is None only for a platform-wide operator. `poller_id` is set for EDGE peers,
    `operator` and `role` for OPERATOR peers.
    """

    kind: IdentityKind
    trust_domain: str
    tenant: str | None
    poller_id: str | None
    operator: str | None
    role: str | None
    serial: int
    not_after: datetime
    spiffe_id: str


def edge_spiffe_id(trust_domain: str, tenant: str, poller_id: str) -> str:
    """The SPIFFE ID of an edge poller."""
    return f"{_SCHEME}{trust_domain}/tenant/{tenant}/poller/{poller_id}"


def operator_spiffe_id(trust_domain: str, name: str, role: str, tenant: str | None) -> str:
    """The SPIFFE ID of an operator, tenant-scoped or platform-wide (`tenant` None)."""
    scope = "" if tenant is None else f"/tenant/{tenant}"
    return f"{_SCHEME}{trust_domain}{scope}/operator/{name}/role/{role}"


def parse_spiffe_id(uri: str, trust_domain: str) -> SpiffeId:
    """Parse one of the three accepted SPIFFE ID forms; anything else is PermissionDenied."""
    shown = uri if len(uri) <= 200 else uri[:200] + "..."

    def deny(reason: str) -> PermissionDenied:
        return PermissionDenied(f"certificate identity {shown!r} is not accepted: {reason}")

    if len(uri) > _MAX_SPIFFE_ID:
        raise deny(f"longer than {_MAX_SPIFFE_ID} characters")
    if not _VISIBLE_ASCII.fullmatch(uri):
        raise deny("contains whitespace, control or non-ASCII characters")
    if not uri.startswith(_SCHEME):
        raise deny("not a spiffe:// URI")
    domain, _, path = uri[len(_SCHEME) :].partition("/")
    if domain != trust_domain:
        raise deny(f"trust domain must be {trust_domain!r}")
    segments = path.split("/")
    if "" in segments:
        raise deny("empty path segment")

    try:
        match segments:
            case ["tenant", tenant, "poller", poller_id]:
                return SpiffeId(
                    kind=IdentityKind.EDGE,
                    trust_domain=domain,
                    tenant=validation.slug("tenant", tenant),
                    poller_id=validation.identifier("poller", poller_id),
                    operator=None,
                    role=None,
                    spiffe_id=uri,
                )
            case ["tenant", tenant, "operator", name, "role", role]:
                if role == PLATFORM_ADMIN:
                    raise deny("platform-admin cannot be scoped to a tenant")
                return SpiffeId(
                    kind=IdentityKind.OPERATOR,
                    trust_domain=domain,
                    tenant=validation.slug("tenant", tenant),
                    poller_id=None,
                    operator=validation.identifier("operator", name),
                    role=_role(role),
                    spiffe_id=uri,
                )
            case ["operator", name, "role", role]:
                return SpiffeId(
                    kind=IdentityKind.OPERATOR,
                    trust_domain=domain,
                    tenant=None,
                    poller_id=None,
                    operator=validation.identifier("operator", name),
                    role=_role(role),
                    spiffe_id=uri,
                )
            case _:
                raise deny(
                    "path must be /tenant/<tenant>/poller/<poller>, "
                    "/tenant/<tenant>/operator/<name>/role/<role> or /operator/<name>/role/<role>"
                )
    except InvalidArgument as exc:
        raise deny(str(exc)) from None


def identity_from_pem(pem: bytes, trust_domain: str, *, now: datetime | None = None) -> PeerIdentity:
    """The identity in a PEM leaf certificate, which must carry exactly one spiffe:// URI SAN.

    Raises PermissionDenied for a certificate without an acceptable identity, and
    Unauthenticated once the certificate has expired: the handshake checked validity, but an
    HTTP/2 connection can outlive the certificate it was opened with.
    """
    identity = _identity_from_pem(pem, trust_domain)
    if identity.not_after <= (now if now is not None else datetime.now(UTC)):
        raise Unauthenticated(
            f"client certificate {identity.spiffe_id!r} expired at {identity.not_after.isoformat()}"
        )
    return identity


def identity_from_auth_context(
    auth_context: Mapping[str, Iterable[bytes]], trust_domain: str
) -> PeerIdentity | None:
    """The peer identity from grpc's `context.auth_context()`; None without a client certificate.

    Takes Iterable values because that is how the grpc.aio stubs type the auth context.
    """
    pem = next(iter(auth_context.get(_PEM_PROPERTY, ())), None)
    return None if pem is None else identity_from_pem(pem, trust_domain)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _identity_from_pem(pem: bytes, trust_domain: str) -> PeerIdentity:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("client certificate could not be parsed") from None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError):
        uris = []
    # The scheme is compared case-insensitively here so that a SPIFFE:// SAN counts towards
    # "exactly one" and is then refused by the strict parser, instead of being skipped.
    spiffe = [uri for uri in uris if uri.lower().startswith(_SCHEME)]
    if len(spiffe) != 1:
        raise PermissionDenied(
            f"client certificate (serial {cert.serial_number:x}) must carry exactly one spiffe:// "
            f"URI SAN, found {len(spiffe)}"
        )
    parsed = parse_spiffe_id(spiffe[0], trust_domain)
    return PeerIdentity(
        kind=parsed.kind,
        trust_domain=parsed.trust_domain,
        tenant=parsed.tenant,
        poller_id=parsed.poller_id,
        operator=parsed.operator,
        role=parsed.role,
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
        spiffe_id=parsed.spiffe_id,
    )


def _role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgument("role", f"must be one of {', '.join(sorted(ROLES))}")
    return role
