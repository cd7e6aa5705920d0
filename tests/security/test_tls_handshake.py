"""Real TLS handshakes against a grpc.aio server serving the standard health service.

These pin down what grpc python itself enforces, so the api layer knows what it may rely on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from srcore.security import pki, tls
from srcore.security.identity import IdentityKind, PeerIdentity, identity_from_auth_context
from srcore.security.pki import CertificateAuthority, DevPki

TD = "serviceradar"
SERVING = 1  # grpc.health.v1.HealthCheckResponse.SERVING
_PEM = "x509_pem_cert"


@dataclass
class _CapturingHealth:
    """The standard async health servicer, recording each caller's auth context first."""

    inner: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    seen: list[Mapping[str, list[bytes]]] = field(default_factory=list)

    async def Check(  # noqa: N802 - the gRPC method name
        self, request: object, context: grpc.aio.ServicerContext[object, object]
    ) -> object:
        self.seen.append({k: list(v) for k, v in context.auth_context().items()})
        return await self.inner.Check(request, context)

    def __getattr__(self, name: str) -> object:
        # Every other method (Watch, List) is the standard servicer's own.
        return getattr(self.inner, name)


@dataclass(frozen=True)
class _Client:
    cert: bytes | None
    key: bytes | None


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return pki.ensure_dev_pki(tmp_path_factory.mktemp("tls") / "pki")


@pytest.fixture(scope="module")
def ca(dev: DevPki) -> CertificateAuthority:
    return pki.load_or_create_ca(dev.directory, "unused: the CA exists")


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return pki.load_or_create_ca(tmp_path_factory.mktemp("foreign"), "someone else's CA")


@pytest.fixture(scope="module")
def edge(dev: DevPki) -> _Client:
    return _Client(dev.edge_cert.read_bytes(), dev.edge_key.read_bytes())


@pytest.fixture(scope="module")
def foreign_edge(foreign_ca: CertificateAuthority) -> _Client:
    # The very same SPIFFE ID as the dev edge, signed by the wrong CA.
    issued = pki.issue_edge_certificate(foreign_ca, TD, "default", "demo", timedelta(days=1))
    return _Client(issued.cert_pem, issued.key_pem)


@pytest.fixture(scope="module")
def expired_edge(ca: CertificateAuthority) -> _Client:
    issued = pki.issue_edge_certificate(
        ca, TD, "default", "demo", timedelta(days=1), now=datetime.now(UTC) - timedelta(days=3)
    )
    return _Client(issued.cert_pem, issued.key_pem)


@asynccontextmanager
async def _serve(dev: DevPki, require_client_auth: bool) -> AsyncIterator[tuple[int, _CapturingHealth]]:
    servicer = _CapturingHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    creds = tls.server_credentials(
        tls.load_pem(dev.server_cert),
        tls.load_pem(dev.server_key),
        tls.load_pem(dev.ca_cert),
        require_client_auth=require_client_auth,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def _check(port: int, ca_pem: bytes, client: _Client) -> None:
    creds = tls.channel_credentials(ca_pem, client.cert, client.key)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == SERVING


async def _refused(port: int, ca_pem: bytes, client: _Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(port, ca_pem, client)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _identity(servicer: _CapturingHealth) -> PeerIdentity | None:
    (context,) = servicer.seen
    return identity_from_auth_context(context, TD)


# --- client certificate required -------------------------------------------------------------


async def test_edge_certificate_is_accepted_and_identified(dev: DevPki, edge: _Client) -> None:
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _check(port, dev.ca_cert.read_bytes(), edge)
    identity = _identity(servicer)
    assert identity is not None
    assert identity.kind is IdentityKind.EDGE
    assert (identity.trust_domain, identity.tenant, identity.poller_id) == (TD, "default", "demo")
    assert identity.spiffe_id == "spiffe://serviceradar/tenant/default/poller/demo"
    assert servicer.seen[0][_PEM] == [edge.cert]


async def test_operator_certificate_is_identified(dev: DevPki) -> None:
    operator = _Client(dev.operator_cert.read_bytes(), dev.operator_key.read_bytes())
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _check(port, dev.ca_cert.read_bytes(), operator)
    identity = _identity(servicer)
    assert identity is not None
    assert (identity.kind, identity.operator, identity.role) == (
        IdentityKind.OPERATOR,
        "admin",
        "platform-admin",
    )


async def test_no_client_certificate_fails_the_handshake(dev: DevPki) -> None:
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _refused(port, dev.ca_cert.read_bytes(), _Client(None, None))
    assert servicer.seen == []


async def test_certificate_from_another_ca_fails_the_handshake(dev: DevPki, foreign_edge: _Client) -> None:
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _refused(port, dev.ca_cert.read_bytes(), foreign_edge)
    assert servicer.seen == []


async def test_expired_certificate_fails_the_handshake(dev: DevPki, expired_edge: _Client) -> None:
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _refused(port, dev.ca_cert.read_bytes(), expired_edge)
    assert servicer.seen == []


async def test_server_certificate_cannot_be_used_as_a_client_certificate(dev: DevPki) -> None:
    # BoringSSL checks the extended key usage: serverAuth only is "unsupported certificate purpose".
    server_as_client = _Client(dev.server_cert.read_bytes(), dev.server_key.read_bytes())
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _refused(port, dev.ca_cert.read_bytes(), server_as_client)
    assert servicer.seen == []


async def test_client_refuses_a_server_from_another_ca(
    dev: DevPki, edge: _Client, foreign_ca: CertificateAuthority
) -> None:
    async with _serve(dev, require_client_auth=True) as (port, servicer):
        await _refused(port, foreign_ca.cert_pem, edge)
    assert servicer.seen == []


# --- client certificate optional -------------------------------------------------------------
# grpc python maps require_client_auth=False to GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE: the
# server never asks, so a client never sends its certificate, whichever CA signed it. Every peer
# on such a port is anonymous. If grpc ever starts requesting optional certificates, these
# tests fail and the "foreign certificate" case must then be refused.


async def test_optional_no_certificate_connects_anonymously(dev: DevPki) -> None:
    async with _serve(dev, require_client_auth=False) as (port, servicer):
        await _check(port, dev.ca_cert.read_bytes(), _Client(None, None))
    assert _PEM not in servicer.seen[0]
    assert _identity(servicer) is None


async def test_optional_foreign_certificate_is_not_requested(dev: DevPki, foreign_edge: _Client) -> None:
    async with _serve(dev, require_client_auth=False) as (port, servicer):
        await _check(port, dev.ca_cert.read_bytes(), foreign_edge)
    assert _PEM not in servicer.seen[0]
    assert _identity(servicer) is None


async def test_optional_valid_certificate_is_not_requested_either(dev: DevPki, edge: _Client) -> None:
    async with _serve(dev, require_client_auth=False) as (port, servicer):
        await _check(port, dev.ca_cert.read_bytes(), edge)
    assert _PEM not in servicer.seen[0]
    assert _identity(servicer) is None


# --- helpers ---------------------------------------------------------------------------------


def test_load_pem_names_the_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        tls.load_pem(missing)


def test_load_pem_refuses_non_pem(tmp_path: Path) -> None:
    path = tmp_path / "cert.der"
    path.write_bytes(b"\x30\x82\x01\x00")
    with pytest.raises(ValueError, match=str(path)):
        tls.load_pem(path)


def test_channel_credentials_need_cert_and_key_together(dev: DevPki) -> None:
    with pytest.raises(ValueError, match="together"):
        tls.channel_credentials(dev.ca_cert.read_bytes(), dev.edge_cert.read_bytes(), None)
