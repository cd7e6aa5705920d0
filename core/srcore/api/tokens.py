"""TokenService: API tokens. Secrets are returned once and stored only as SHA-256 digests."""

from __future__ import annotations

from datetime import timedelta

from serviceradar.admin.v1 import token_service_pb2 as pb
from serviceradar.admin.v1 import token_service_pb2_grpc as pb_grpc
from srcore.api import paging
from srcore.api.access import Access
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from srcore.domain.tenancy import ApiToken, token_ttl
from srcore.security import tokens
from srcore.security.principal import Principal, caller, note
from srcore.security.rbac import ASSIGNABLE_ROLES, Role, can_grant

ROLES: dict[Role, pb.Role.ValueType] = {
    Role.VIEWER: pb.ROLE_VIEWER,
    Role.OPERATOR: pb.ROLE_OPERATOR,
    Role.ADMIN: pb.ROLE_ADMIN,
    Role.PLATFORM_ADMIN: pb.ROLE_PLATFORM_ADMIN,
}
_ROLE_FROM_PB = {value: role for role, value in ROLES.items()}
# Token ids are random; a collision is astronomically rare, but a retry costs nothing.
_ID_ATTEMPTS = 3


def token_message(token: ApiToken) -> pb.ApiToken:
    """The admin view of a token: metadata only, never the secret or its digest."""
    return pb.ApiToken(
        token_id=token.token_id,
        tenant=token.tenant or "",
        role=ROLES[Role(token.role)],
        description=token.description,
        created_by=token.created_by,
        created_at=timestamp(token.created_at),
        expires_at=timestamp(token.expires_at),
        last_used_at=timestamp(token.last_used_at),
        revoked_at=timestamp(token.revoked_at),
    )


def _role(value: pb.Role.ValueType) -> Role:
    role = _ROLE_FROM_PB.get(value)
    if role is None:
        names = ", ".join(pb.Role.Name(ROLES[r]) for r in ASSIGNABLE_ROLES)
        raise InvalidArgument("role", f"required, one of {names}")
    return role


class TokenServicer(pb_grpc.TokenServiceServicer):
    """API tokens of the caller's tenant (every token for a platform admin)."""

    def __init__(self, access: Access) -> None:
        self._access = access

    async def _visible(self, principal: Principal, token_id: str) -> ApiToken:
        if not tokens.valid_id(token_id):
            raise InvalidArgument("token_id", "must be the 12-character id shown by ListTokens")
        token = await self._access.tokens.get(token_id)
        if token is None or not principal.sees(token.tenant):
            raise NotFound(f"token {token_id} not found")
        return token

    async def CreateToken(self, request: pb.CreateTokenRequest, context: Context) -> pb.CreateTokenResponse:
        """Create a token with at most the caller's role; the secret is in this answer only."""
        principal = caller()
        role = _role(request.role)
        if not can_grant(principal.role, role):
            raise PermissionDenied(f"a {principal.role.value} cannot create a {role.value} token")
        tenant = None if role is Role.PLATFORM_ADMIN else principal.tenant_for(request.tenant)
        ttl = token_ttl(request.ttl.ToTimedelta().total_seconds() if request.HasField("ttl") else None)
        description = validation.text("description", request.description, 255)
        token, secret = await self._insert(principal, tenant, role, description, ttl)
        note(target=f"token_id={token.token_id} role={role.value}", tenant=tenant or "")
        return pb.CreateTokenResponse(token=token_message(token), secret=secret)

    async def _insert(
        self, principal: Principal, tenant: str | None, role: Role, description: str, ttl: timedelta
    ) -> tuple[ApiToken, str]:
        now = self._access.clock()
        attempts_left = _ID_ATTEMPTS
        while True:
            new = tokens.generate(tokens.TokenKind.API)
            token = ApiToken(
                token_id=new.token_id,
                tenant=tenant,
                role=role.value,
                description=description,
                created_by=principal.actor,
                created_at=now,
                expires_at=now + ttl,
                digest=new.digest,
            )
            try:
                await self._access.tokens.insert(token)
            except AlreadyExists:
                attempts_left -= 1
                if not attempts_left:
                    raise
                continue
            return token, new.secret

    async def ListTokens(self, request: pb.ListTokensRequest, context: Context) -> pb.ListTokensResponse:
        """One page of tokens, newest first."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        size = paging.page_size(request.page_size)
        after = paging.text_key(request.page_token, 2)
        key = (paging.decode_time(after[0]), after[1]) if after else None
        found = await self._access.tokens.list_tokens(
            tenant, request.include_inactive, self._access.clock(), size + 1, key
        )
        page = found[:size]
        more = len(found) > size
        return pb.ListTokensResponse(
            tokens=[token_message(t) for t in page],
            next_page_token=paging.encode_token([page[-1].created_at.isoformat(), page[-1].token_id])
            if more
            else "",
        )

    async def GetToken(self, request: pb.GetTokenRequest, context: Context) -> pb.GetTokenResponse:
        """One token's metadata; NOT_FOUND for one the caller cannot see."""
        token = await self._visible(caller(), request.token_id)
        return pb.GetTokenResponse(token=token_message(token))

    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: Context) -> pb.RevokeTokenResponse:
        """Revoke a token; this replica refuses it at once, the others within the cache TTL."""
        token = await self._visible(caller(), request.token_id)
        note(tenant=token.tenant or "")
        revoked = await self._access.tokens.revoke(token.token_id, self._access.clock())
        self._access.authenticator.forget(token.token_id)
        if revoked is None:
            raise NotFound(f"token {token.token_id} not found")
        return pb.RevokeTokenResponse(token=token_message(revoked))
