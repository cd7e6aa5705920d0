"""Repository of API tokens. Only digests are stored; secrets never reach this module."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from srcore.domain.errors import AlreadyExists
from srcore.domain.tenancy import ApiToken
from srcore.store.database import Database
from srcore.store.pollers import utc
from srcore.store.tables import api_tokens
from srcore.store.tenancy import require_tenant


def _token(row: sa.Row[Any]) -> ApiToken:
    return ApiToken(
        token_id=row.token_id,
        tenant=row.tenant,
        role=row.role,
        description=row.description,
        created_by=row.created_by,
        created_at=utc(row.created_at) or row.created_at,
        expires_at=utc(row.expires_at) or row.expires_at,
        digest=row.digest,
        last_used_at=utc(row.last_used_at),
        revoked_at=utc(row.revoked_at),
    )


class TokenRepository:
    """SQL access for API tokens."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, token: ApiToken) -> None:
        """Store a new token; AlreadyExists on an id collision (the caller draws a new id)."""
        async with self._db.begin() as conn:
            if token.tenant is not None:
                await require_tenant(conn, token.tenant)
            try:
                await conn.execute(
                    api_tokens.insert().values(
                        token_id=token.token_id,
                        tenant=token.tenant,
                        role=token.role,
                        description=token.description,
                        digest=token.digest,
                        created_by=token.created_by,
                        created_at=token.created_at,
                        expires_at=token.expires_at,
                    )
                )
            except IntegrityError:
                raise AlreadyExists(f"token id {token.token_id} is taken") from None

    async def get(self, token_id: str) -> ApiToken | None:
        """One token, or None."""
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(api_tokens).where(api_tokens.c.token_id == token_id))).first()
        return None if row is None else _token(row)

    async def list_tokens(
        self,
        tenant: str | None,
        include_inactive: bool,
        now: datetime,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[ApiToken]:
        """Tokens newest first, of one tenant or all (None), after the key (created_at, token_id)."""
        query = (
            sa.select(api_tokens)
            .order_by(api_tokens.c.created_at.desc(), api_tokens.c.token_id.desc())
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(api_tokens.c.tenant == tenant)
        if not include_inactive:
            query = query.where(api_tokens.c.revoked_at.is_(None), api_tokens.c.expires_at > now)
        if after is not None:
            query = query.where(sa.tuple_(api_tokens.c.created_at, api_tokens.c.token_id) < sa.tuple_(*after))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_token(row) for row in rows]

    async def revoke(self, token_id: str, now: datetime) -> ApiToken | None:
        """Mark a token revoked (keeping the first revocation time); None when it does not exist."""
        key = api_tokens.c.token_id == token_id
        async with self._db.begin() as conn:
            await conn.execute(
                api_tokens.update().where(key, api_tokens.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            row = (await conn.execute(sa.select(api_tokens).where(key))).first()
        return None if row is None else _token(row)

    async def record_last_used(self, last_used: Mapping[str, datetime]) -> None:
        """Write a batch of last-use times in one statement; a time never moves backwards."""
        if not last_used:
            return
        rows = [{"k_id": token_id, "at": at} for token_id, at in last_used.items()]
        async with self._db.begin() as conn:
            await conn.execute(
                api_tokens.update()
                .where(
                    api_tokens.c.token_id == sa.bindparam("k_id"),
                    sa.or_(
                        api_tokens.c.last_used_at.is_(None),
                        api_tokens.c.last_used_at < sa.bindparam("at"),
                    ),
                )
                .values(last_used_at=sa.bindparam("at")),
                rows,
            )
