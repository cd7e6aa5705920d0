"""The one interceptor that authenticates and authorises every RPC, and audits.

For each call it looks the method up in the permission matrix (`srcore.security.rbac`):

- public services (health, reflection) pass untouched;
- edge RPCs need an edge client certificate whose tenant is active and which is not the
  certificate of a revoked, deleted, expired or undelivered onboarding package;
- admin RPCs need a principal: the bearer token in `authorization` metadata when one is sent
  (it wins over the connection's certificate), else an operator client certificate. Its role
  must be in the method's rule;
- anything else is refused: a service registered without matrix entries fails closed.

Every denial and every call of a mutating admin RPC is written to the audit log with the
principal, tenant, method, target and outcome. Servicers read the principal with
`srcore.security.principal.caller()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from grpc.aio import AbortError
from prometheus_client import Counter

from srcore.api.access import Access
from srcore.api.context import Context
from srcore.api.errors import status_code
from srcore.domain.errors import DomainError, PermissionDenied, Unauthenticated
from srcore.domain.tenancy import AuditEvent
from srcore.security import tokens
from srcore.security.identity import IdentityKind, PeerIdentity, identity_from_auth_context
from srcore.security.principal import CallRecord, Principal, PrincipalKind, begin_call
from srcore.security.rbac import MATRIX, Rule, Surface, surface

log = logging.getLogger(__name__)

AUTH_DENIALS = Counter(
    "srcore_auth_denials_total",
    "Calls refused by authentication or authorisation, by surface and status code.",
    ["surface", "code"],
)

DENIALS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
REGISTER_POLLER = "/serviceradar.edge.v1.EdgeService/RegisterPoller"
ANONYMOUS = "anonymous"
# How the audit log names a bearer token's holder before the token is verified, matching the
# name `Principal.actor` gives it after.
_ACTOR_KIND = {tokens.TokenKind.API: PrincipalKind.TOKEN, tokens.TokenKind.DOWNLOAD: PrincipalKind.DOWNLOAD}

Behavior = Callable[..., Any]


def _short(method: str) -> str:
    return method.rsplit(".", 1)[-1]


def _request_field(request: object, name: str) -> str:
    if not isinstance(request, Message) or name not in request.DESCRIPTOR.fields_by_name:
        return ""
    value = getattr(request, name)
    field = request.DESCRIPTOR.fields_by_name[name]
    if field.enum_type is not None and isinstance(value, int):
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else str(value)
    return str(value)


def _target(rule: Rule, request: object) -> str:
    parts = [(name, _request_field(request, name)) for name in rule.target]
    return " ".join(f"{name}={value}" for name, value in parts if value)


def _code_name(code: object) -> str:
    # grpc.aio reports the code an aborted call set as a StatusCode or as its integer value.
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return "UNKNOWN"


def _outcome(error: BaseException | None, context: Context) -> tuple[str, str]:
    """The status code name and the message of how a call ended."""
    if error is None:
        return "OK", ""
    if isinstance(error, DomainError):
        return status_code(error).name, str(error)
    if isinstance(error, AbortError):
        return _code_name(context.code()), str(context.details() or "")
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED", ""
    # The message of an unexpected error may hold anything; it is logged under an incident id.
    return "INTERNAL", ""


class AuthzInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorises against the permission matrix, and audits every RPC."""

    def __init__(self, access: Access, trust_domain: str) -> None:
        self._access = access
        self._trust_domain = trust_domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler of this call in the checks its surface needs."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kind = surface(method)
        if kind is Surface.PUBLIC:
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, kind, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, kind, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, kind, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, kind, cast(Behavior, handler.stream_stream)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, method: str, kind: Surface, behavior: Behavior) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: Context) -> Any:
            record = await self._admit(method, kind, request, context)
            try:
                response = await behavior(request, context)
            except (Exception, asyncio.CancelledError) as exc:
                await self._finish(method, kind, record, context, exc)
                raise
            await self._finish(method, kind, record, context, None)
            return response

        return guarded

    def _streaming(self, method: str, kind: Surface, behavior: Behavior) -> Callable[..., AsyncIterator[Any]]:
        # Streams are checked when they open. No streaming RPC mutates through the admin API,
        # so of what happens later only denials (e.g. a payload naming another poller) are
        # audited; cancellations pass through untouched, as an async generator must let them.
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            record = await self._admit(method, kind, request, context)
            try:
                async for response in behavior(request, context):
                    yield response
            except (DomainError, AbortError) as exc:
                code, message = _outcome(exc, context)
                if code in DENIALS:
                    await self._audit(record, context, code, message)
                raise

        return guarded

    async def _admit(self, method: str, kind: Surface, request: object, context: Context) -> CallRecord:
        rule = MATRIX.get(method)
        record = CallRecord(method, None, ANONYMOUS, _target(rule, request) if rule else "", "")
        begin_call(record)
        try:
            if kind is Surface.EDGE:
                await self._admit_edge(record, context)
            elif kind is Surface.ADMIN:
                assert rule is not None
                await self._admit_admin(record, rule, request, context)
            else:
                log.error("refusing %s: it has no entry in the permission matrix", method)
                raise PermissionDenied(f"{_short(method)} has no permission rule; refusing")
        except DomainError as exc:
            await self._deny(kind, record, context, exc)
            raise
        return record

    async def _admit_admin(self, record: CallRecord, rule: Rule, request: object, context: Context) -> None:
        principal = await self._authenticate(record, context)
        record.principal = principal
        record.actor = principal.actor
        record.tenant = principal.tenant or _request_field(request, rule.tenant_field)
        if principal.tenant is not None:
            await self._access.tenant_states.require_active(principal.tenant)
        if principal.role not in rule.roles:
            raise PermissionDenied(f"role {principal.role.value} may not call {_short(record.method)}")

    async def _authenticate(self, record: CallRecord, context: Context) -> Principal:
        headers = [value for key, value in context.invocation_metadata() or () if key == "authorization"]
        if len(headers) > 1:
            raise Unauthenticated("more than one authorization header")
        if headers:
            scheme, _, credential = str(headers[0]).partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise Unauthenticated("authorization must read 'Bearer <token>'")
            presented = tokens.parse(credential.strip())
            record.actor = f"{_ACTOR_KIND[presented.kind].value}:{presented.token_id}"
            return await self._access.authenticator.from_bearer(presented)
        identity = self._identity(record, context)
        if identity is None:
            raise Unauthenticated(
                "admin RPCs need 'authorization: Bearer <token>' metadata or an operator client certificate"
            )
        if identity.kind is not IdentityKind.OPERATOR:
            raise PermissionDenied(f"{identity.spiffe_id} is an edge identity; it cannot call admin RPCs")
        return self._access.authenticator.from_certificate(identity)

    def _identity(self, record: CallRecord, context: Context) -> PeerIdentity | None:
        identity = identity_from_auth_context(context.auth_context(), self._trust_domain)
        if identity is not None:
            record.actor = f"cert:{identity.spiffe_id}"
            record.tenant = identity.tenant or ""
        return identity

    async def _admit_edge(self, record: CallRecord, context: Context) -> None:
        identity = self._identity(record, context)
        if identity is None:
            raise Unauthenticated("edge RPCs need a client certificate")
        if identity.kind is not IdentityKind.EDGE:
            raise PermissionDenied(f"{identity.spiffe_id} is not an edge (poller) identity")
        await self._access.edge_gate.admit(identity)

    async def _deny(self, kind: Surface, record: CallRecord, context: Context, error: DomainError) -> None:
        code = status_code(error).name
        AUTH_DENIALS.labels(kind.value, code).inc()
        log.info("denied %s to %s: %s", _short(record.method), record.actor, error)
        await self._audit(record, context, code, str(error))

    async def _finish(
        self, method: str, kind: Surface, record: CallRecord, context: Context, error: BaseException | None
    ) -> None:
        code, message = _outcome(error, context)
        if kind is Surface.EDGE:
            if code in DENIALS:
                await self._audit(record, context, code, message)
            elif code == "OK" and method == REGISTER_POLLER:
                await self._activate(record, context)
            return
        rule = MATRIX[method]
        if rule.mutates or code in DENIALS:
            await self._audit(record, context, code, message)

    async def _activate(self, record: CallRecord, context: Context) -> None:
        identity = identity_from_auth_context(context.auth_context(), self._trust_domain)
        assert identity is not None
        try:
            package = await self._access.edge_gate.registered(identity)
        except Exception as exc:
            # The poller is registered; activation is retried on its next registration.
            log.warning("activating the package of %s failed: %s", identity.spiffe_id, type(exc).__name__)
            return
        if package is not None:
            record.target = f"package_id={package.package_id}"
            await self._audit(record, context, "OK", "onboarding package activated")

    async def _audit(self, record: CallRecord, context: Context, outcome: str, message: str) -> None:
        now: datetime = self._access.clock()
        await self._access.audit.record(
            AuditEvent(
                at=now,
                actor=record.actor,
                tenant=record.tenant,
                method=record.method,
                target=record.target,
                outcome=outcome,
                message=message,
                peer=context.peer() or "",
            )
        )
