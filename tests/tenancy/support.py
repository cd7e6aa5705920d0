"""Calling a real core as anyone: operator and edge certificates issued by its dev CA, API
tokens over the token-only admin port, and generic calls of any RPC by its full name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from serviceradar.admin.v1 import audit_service_pb2 as audit_pb
from serviceradar.admin.v1 import audit_service_pb2_grpc as audit_grpc
from serviceradar.admin.v1 import tenant_service_pb2 as tenant_pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as tenant_grpc
from serviceradar.admin.v1 import token_service_pb2 as token_pb
from serviceradar.admin.v1 import token_service_pb2_grpc as token_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as edge_grpc
from srcore.app import CoreApp
from srcore.security import pki
from srcore.security.pki import CertificateAuthority, IssuedCertificate
from srcore.security.rbac import Role
from tests.helpers.core import RunningCore

TD = "serviceradar"
ROLE_PB = {
    Role.VIEWER: token_pb.ROLE_VIEWER,
    Role.OPERATOR: token_pb.ROLE_OPERATOR,
    Role.ADMIN: token_pb.ROLE_ADMIN,
    Role.PLATFORM_ADMIN: token_pb.ROLE_PLATFORM_ADMIN,
}


def io_classes(method: str) -> tuple[type[Message], type[Message], bool, bool]:
    """Request and response classes of a full method name, and whether each side streams."""
    service, _, name = method.lstrip("/").rpartition("/")
    described = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    return (
        message_factory.GetMessageClass(described.input_type),
        message_factory.GetMessageClass(described.output_type),
        described.client_streaming,
        described.server_streaming,
    )


async def invoke(
    channel: grpc.aio.Channel, method: str, request: Message | None = None, timeout: float = 5
) -> Any:
    """Call any RPC by its full name; for a server stream, the first message (or the deadline).

    Raises grpc.aio.AioRpcError like a stub would.
    """
    request_cls, response_cls, client_streaming, server_streaming = io_classes(method)
    message = request if request is not None else request_cls()
    serialize, deserialize = request_cls.SerializeToString, response_cls.FromString
    if client_streaming and server_streaming:
        bidi = channel.stream_stream(method, request_serializer=serialize, response_deserializer=deserialize)
        return await bidi(iter([message]), timeout=timeout).read()
    if client_streaming:
        client = channel.stream_unary(method, request_serializer=serialize, response_deserializer=deserialize)
        return await client(iter([message]), timeout=timeout)
    if server_streaming:
        stream = channel.unary_stream(method, request_serializer=serialize, response_deserializer=deserialize)
        return await stream(message, timeout=timeout).read()
    unary = channel.unary_unary(method, request_serializer=serialize, response_deserializer=deserialize)
    return await unary(message, timeout=timeout)


async def code_of(
    channel: grpc.aio.Channel, method: str, request: Message | None = None, timeout: float = 5
) -> grpc.StatusCode:
    """The status a call ends with (OK when it answers)."""
    try:
        await invoke(channel, method, request, timeout)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@dataclass
class Site:
    """A running core plus the means to call it as any principal."""

    core: RunningCore
    _ca: CertificateAuthority | None = field(default=None, init=False)

    @property
    def app(self) -> CoreApp:
        """The in-process core."""
        return self.core.app

    @property
    def ca(self) -> CertificateAuthority:
        """The dev CA the core trusts and signs packages with."""
        if self._ca is None:
            self._ca = pki.load_or_create_ca(self.core.data_dir / "pki", "exists")
        return self._ca

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, for verifying the server."""
        return self.ca.cert_pem

    def mtls(self, issued: IssuedCertificate | None) -> grpc.aio.Channel:
        """A channel to the main (mutual TLS) port presenting `issued`."""
        creds = grpc.ssl_channel_credentials(
            self.ca_pem, issued.key_pem if issued else None, issued.cert_pem if issued else None
        )
        return grpc.aio.secure_channel(self.core.address, creds)

    def platform(self) -> grpc.aio.Channel:
        """The dev operator certificate: platform admin."""
        return self.core.channel(self.core.creds.operator())

    def operator_cert(self, role: Role, tenant: str | None, name: str = "ops") -> IssuedCertificate:
        """An operator certificate of `role`, tenant-scoped (or platform-wide for None)."""
        return pki.issue_operator_certificate(self.ca, TD, name, role.value, tenant, timedelta(days=1))

    def edge_cert(self, tenant: str, poller_id: str) -> IssuedCertificate:
        """An edge certificate for (tenant, poller)."""
        return pki.issue_edge_certificate(self.ca, TD, tenant, poller_id, timedelta(days=1))

    def admin_port(self, token: str | None) -> grpc.aio.Channel:
        """A channel to the token-only admin port, sending `token` as a bearer token."""
        creds = grpc.ssl_channel_credentials(self.ca_pem)
        if token is not None:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
        return grpc.aio.secure_channel(f"127.0.0.1:{self.app.admin_port}", creds)

    async def create_tenant(self, name: str) -> None:
        """Create a tenant as the platform admin."""
        async with self.platform() as channel:
            await tenant_grpc.TenantServiceStub(channel).CreateTenant(
                tenant_pb.CreateTenantRequest(name=name)
            )

    async def create_token(
        self, tenant: str, role: Role, ttl: timedelta | None = None
    ) -> token_pb.CreateTokenResponse:
        """Create an API token as the platform admin."""
        request = token_pb.CreateTokenRequest(
            tenant=tenant, role=ROLE_PB[role], description=f"{role} of {tenant}"
        )
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        async with self.platform() as channel:
            return await token_grpc.TokenServiceStub(channel).CreateToken(request)

    async def audit(self, **filters: Any) -> list[audit_pb.AuditEvent]:
        """Audit events (newest first) as the platform admin sees them."""
        async with self.platform() as channel:
            answer = await audit_grpc.AuditServiceStub(channel).ListAuditEvents(
                audit_pb.ListAuditEventsRequest(page_size=1000, **filters)
            )
        return list(answer.events)

    async def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a table, read straight from the store."""
        async with self.app.db.connect() as conn:
            result = await conn.execute(sa.text(f"SELECT * FROM {table}"))
            return [dict(row._mapping) for row in result]

    async def execute(self, statement: str, **params: Any) -> None:
        """Change the store directly, to arrange a state (e.g. a deadline in the past)."""
        async with self.app.db.begin() as conn:
            await conn.execute(sa.text(statement), params)

    @asynccontextmanager
    async def edge(self, issued: IssuedCertificate) -> AsyncIterator[edge_grpc.EdgeServiceAsyncStub]:
        """An EdgeService stub over mutual TLS with `issued`."""
        async with self.mtls(issued) as channel:
            yield edge_grpc.EdgeServiceStub(channel)


def register_request(
    poller_id: str, partition: str = "dc1", tenant: str = ""
) -> edge_pb.RegisterPollerRequest:
    """A minimal registration."""
    return edge_pb.RegisterPollerRequest(
        poller_id=poller_id, partition=partition, tenant=tenant, version="1.0"
    )
