"""The leadership fence: a write made on behalf of an older leadership than one that wrote is refused.

One row of `leadership_fence` ('leader') holds the epoch and fencing token of the newest
leadership that wrote. Every leader-only write calls `hold_fence` inside its own transaction:

    UPDATE leadership_fence SET epoch = :e, token = :t, replica = :r, updated_at = :now
     WHERE name = 'leader' AND (epoch <> :e OR token <= :t)

One row updated: the write may commit, and the row stays locked until it does, so a later
leader's write waits for this one and is ordered after it. No row updated: a later leadership
has written, `Fenced` is raised and the caller's transaction rolls back with everything it did.
Writers call it last, just before the commit, so the lock that orders leaders is held briefly.

Epochs. Fencing tokens are etcd revisions, which count from 1 again when etcd is rebuilt from
scratch (a new cluster id, hence a new epoch). Tokens of two epochs do not compare, so a
write under another epoch than the recorded one resets the fence to it: the new cluster's
leader is never locked out by the old cluster's larger revisions. The price: across such a
rebuild, a leader of the old cluster that was paused between its leadership check and its
write can still make that one write (it cannot renew its lease on the new cluster, so it
leads no longer than its lease TTL). Within one etcd cluster the fence is strict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.coordination import LeaderInfo
from srcore.domain.leadership import Fenced
from srcore.store.database import Database
from srcore.store.pollers import utc
from srcore.store.tables import leadership_fence

FENCE = "leader"


@dataclass(frozen=True, slots=True)
class FenceRecord:
    """The newest leadership that wrote."""

    epoch: str
    token: int
    replica: str
    updated_at: datetime


async def _read(conn: AsyncConnection) -> FenceRecord:
    row = (await conn.execute(sa.select(leadership_fence).where(leadership_fence.c.name == FENCE))).one()
    updated_at = utc(row.updated_at)
    assert updated_at is not None
    return FenceRecord(row.epoch, row.token, row.replica, updated_at)


async def hold_fence(conn: AsyncConnection, leader: LeaderInfo, now: datetime) -> None:
    """Pass the fence in the caller's transaction, or raise Fenced (see the module docstring)."""
    result = await conn.execute(
        leadership_fence.update()
        .where(
            leadership_fence.c.name == FENCE,
            sa.or_(
                leadership_fence.c.epoch != leader.epoch, leadership_fence.c.token <= leader.fencing_token
            ),
        )
        .values(epoch=leader.epoch, token=leader.fencing_token, replica=leader.leader_id, updated_at=now)
    )
    if result.rowcount != 1:
        current = await _read(conn)
        raise Fenced(
            f"fencing token {leader.fencing_token} of {leader.leader_id} is older than "
            f"{current.token}, written by {current.replica or 'an earlier leader'}"
        )


class FenceRepository:
    """The fence as the job runner and cluster status use it."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock

    async def claim(self, leader: LeaderInfo) -> None:
        """Record `leader` as the newest leadership; raises Fenced when a later one wrote."""
        async with self._db.begin() as conn:
            await hold_fence(conn, leader, self._clock())

    async def current(self) -> FenceRecord:
        """The newest leadership that wrote."""
        async with self._db.connect() as conn:
            return await _read(conn)
