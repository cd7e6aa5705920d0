"""Repository of work items (checks, sweeps, sources) and their placement on pollers.

Operators' writes (create, modify, delete) and the leader's placement writes touch the same
rows but different columns; a placement is written only where the item's revision is still
the one the leader planned from, so it never overwrites a newer operator change (that change
asks for another dispatch round anyway).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.coordination import LeaderInfo
from srcore.domain.dispatch import Placeable, Placement
from srcore.domain.errors import AlreadyExists, NotFound
from srcore.domain.model import AgentState, PollerState, Transition
from srcore.domain.work import (
    Assignment,
    AssignmentState,
    Spec,
    WorkItem,
    WorkKind,
    capability,
    item_digest,
    pinned_agent,
    spec_document,
    spec_from_document,
)
from srcore.security.credentials import Sealed
from srcore.store.database import Database
from srcore.store.fence import hold_fence
from srcore.store.lists import one_of
from srcore.store.pollers import utc
from srcore.store.tables import agents, partitions, pollers, work_items
from srcore.store.tenancy import require_tenant
from srcore.store.transitions import record_transitions

# Rows changed per statement when the leader writes a large plan (a partition's first
# placement, recovery of a big poller).
WRITE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Modification:
    """An operator's change of an item. `credentials` None keeps the stored ones; a Sealed
    replaces them; `clear_credentials` removes them."""

    partition: str
    enabled: bool
    spec: Spec
    credentials: Sealed | None = None
    clear_credentials: bool = False


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """An item of a dispatch view: what dispatch needs, with its revision and name."""

    placeable: Placeable
    name: str
    partition: str
    revision: int


@dataclass(frozen=True, slots=True)
class ViewPoller:
    """A poller of a dispatch view, as the store has it."""

    poller_id: str
    partition: str
    state: PollerState
    capabilities: frozenset[str]
    agents: dict[str, frozenset[str]]
    desired_version: str


@dataclass(slots=True)
class DispatchView:
    """What the leader plans one partition from.

    `items` are the partition's items; `foreign` are items its pollers (and its items' current
    owners) hold in other partitions, needed for their configuration versions only.
    """

    tenant: str
    partition: str
    items: list[PlannedItem] = field(default_factory=list)
    foreign: list[PlannedItem] = field(default_factory=list)
    pollers: dict[str, ViewPoller] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlacementWrite:
    """One placement to write, conditioned on the item still being at `revision`."""

    item: PlannedItem
    placement: Placement


@dataclass(frozen=True, slots=True)
class AssignedWork:
    """One item of a poller's configuration, with its sealed credentials."""

    item: WorkItem
    sealed: Sealed | None
    digest: str


def item_row(item: WorkItem, sealed: Sealed | None) -> dict[str, Any]:
    """The row of a new item (not placed yet)."""
    return {
        "tenant": item.tenant,
        "kind": item.kind.value,
        "name": item.name,
        "item_id": item.item_id,
        "partition": item.partition,
        "enabled": item.enabled,
        "spec": spec_document(item.spec),
        "capability": capability(item.spec),
        "agent_id": item.agent_id,
        "digest": item_digest(item.kind, item.item_id, item.name, item.spec, item.credentials_version),
        "sealed_credentials": sealed.value if sealed else None,
        "credentials_key_id": sealed.key_id if sealed else None,
        "credentials_version": item.credentials_version,
        "credentials_updated_at": item.credentials_updated_at,
        "revision": item.revision,
        "poller_id": None,
        "state": item.assignment.state.value,
        "state_reason": item.assignment.reason,
        "state_changed_at": item.created_at,
        "created_at": item.created_at,
        "updated_at": item.created_at,
    }


def _item(row: sa.Row[Any]) -> WorkItem:
    kind = WorkKind(row.kind)
    return WorkItem(
        tenant=row.tenant,
        kind=kind,
        name=row.name,
        item_id=row.item_id,
        partition=row.partition,
        enabled=row.enabled,
        spec=spec_from_document(kind, row.spec),
        assignment=Assignment(
            AssignmentState(row.state), row.poller_id or "", row.state_reason, utc(row.state_changed_at)
        ),
        revision=row.revision,
        credentials_version=row.credentials_version,
        credentials_updated_at=utc(row.credentials_updated_at),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def _planned(row: sa.Row[Any]) -> PlannedItem:
    return PlannedItem(
        Placeable(
            item_id=row.item_id,
            kind=row.kind,
            capability=row.capability,
            enabled=row.enabled,
            poller_id=row.poller_id,
            state=AssignmentState(row.state),
            agent_id=row.agent_id,
            digest=row.digest,
        ),
        name=row.name,
        partition=row.partition,
        revision=row.revision,
    )


_PLANNED_COLUMNS = (
    work_items.c.item_id,
    work_items.c.kind,
    work_items.c.name,
    work_items.c.partition,
    work_items.c.capability,
    work_items.c.enabled,
    work_items.c.poller_id,
    work_items.c.state,
    work_items.c.agent_id,
    work_items.c.digest,
    work_items.c.revision,
)


@functools.lru_cache(maxsize=1024)
def _capability_set(document: str) -> frozenset[str]:
    """A capability list read as JSON text: a fleet has few distinct ones, so each is parsed once
    (the leader reads every poller's and agent's list on each dispatch round)."""
    return frozenset(json.loads(document))


# Agents a dispatch may rely on: announced and not reported down or gone.
_USABLE_AGENTS = (AgentState.CONNECTING.value, AgentState.CONNECTED.value, AgentState.DEGRADED.value)


# PostgreSQL writes a batch of placements in one statement over arrays (one parameter per
# column, so the statement is compiled once); a partition's first placement writes every item.
_PG_PLACEMENTS = sa.text(
    """
    UPDATE work_items AS w
       SET poller_id = v.poller_id, state = v.state, state_reason = v.reason, state_changed_at = :now
      FROM unnest(CAST(:ids AS varchar[]), CAST(:revisions AS bigint[]), CAST(:pollers AS varchar[]),
                  CAST(:states AS varchar[]), CAST(:reasons AS varchar[]))
           AS v(item_id, revision, poller_id, state, reason)
     WHERE w.item_id = v.item_id AND w.revision = v.revision
    """
)

# SQLite (in process) writes them with executemany.
_PLACEMENT = (
    work_items.update()
    .where(
        work_items.c.item_id == sa.bindparam("k_item"), work_items.c.revision == sa.bindparam("k_revision")
    )
    .values(
        poller_id=sa.bindparam("poller_id"),
        state=sa.bindparam("state"),
        state_reason=sa.bindparam("state_reason"),
        state_changed_at=sa.bindparam("k_now"),
    )
)


async def _write_placements(conn: AsyncConnection, batch: Sequence[PlacementWrite], now: datetime) -> int:
    """Write placements where each item is still at the revision planned from; returns how
    many rows were written."""
    if conn.dialect.name == "postgresql":
        result = await conn.execute(
            _PG_PLACEMENTS,
            {
                "now": now,
                "ids": [w.item.placeable.item_id for w in batch],
                "revisions": [w.item.revision for w in batch],
                "pollers": [w.placement.poller_id for w in batch],
                "states": [w.placement.state.value for w in batch],
                "reasons": [w.placement.reason[:512] for w in batch],
            },
        )
    else:
        result = await conn.execute(
            _PLACEMENT,
            [
                {
                    "k_item": w.item.placeable.item_id,
                    "k_revision": w.item.revision,
                    "poller_id": w.placement.poller_id,
                    "state": w.placement.state.value,
                    "state_reason": w.placement.reason[:512],
                    "k_now": now,
                }
                for w in batch
            ],
        )
    return int(result.rowcount)


class WorkRepository:
    """SQL access for work items; every multi-row change is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # operators

    async def create(self, item: WorkItem, sealed: Sealed | None) -> WorkItem:
        """Insert an item; NotFound for an unknown tenant or partition, AlreadyExists for a
        taken name."""
        values = item_row(item, sealed)
        async with self._db.begin() as conn:
            await self._require_partition(conn, item.tenant, item.partition)
            try:
                await conn.execute(work_items.insert().values(values))
            except IntegrityError:
                raise AlreadyExists(f"{item.kind.value} {item.name!r} already exists") from None
        return item

    async def get(self, tenant: str, kind: WorkKind, name: str) -> WorkItem | None:
        """One item, or None."""
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(work_items).where(self._key(tenant, kind, name)))).first()
        return None if row is None else _item(row)

    async def list_items(
        self,
        tenant: str | None,
        kind: WorkKind | None,
        partition: str | None,
        poller_id: str | None,
        state: AssignmentState | None,
        limit: int,
        after: tuple[str, str, str] | None,
    ) -> list[WorkItem]:
        """A page of items ordered by (tenant, kind, name), starting after the key `after`."""
        query = sa.select(work_items).order_by(work_items.c.tenant, work_items.c.kind, work_items.c.name)
        conditions = [
            (work_items.c.tenant, tenant),
            (work_items.c.kind, kind.value if kind else None),
            (work_items.c.partition, partition),
            (work_items.c.poller_id, poller_id),
            (work_items.c.state, state.value if state else None),
        ]
        for column, value in conditions:
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            query = query.where(
                sa.tuple_(work_items.c.tenant, work_items.c.kind, work_items.c.name) > sa.tuple_(*after)
            )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_item(row) for row in rows]

    async def modify(
        self,
        tenant: str,
        kind: WorkKind,
        name: str,
        change: Callable[[WorkItem], Modification],
        now: datetime,
    ) -> tuple[WorkItem, WorkItem]:
        """Apply an operator's change to the item as stored; returns (before, after).

        `change` validates and may raise (nothing is written then). Moving the item to
        another partition or disabling it takes it off its poller at once: work never runs in
        a partition it no longer belongs to; the leader places it again.
        """
        key = self._key(tenant, kind, name)
        async with self._db.begin() as conn:
            query = sa.select(work_items).where(key)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"{kind.value} {name!r} not found")
            before = _item(row)
            modification = change(before)
            if modification.partition != before.partition:
                await self._require_partition(conn, tenant, modification.partition)
            credentials_version = before.credentials_version
            values: dict[str, Any] = {}
            if modification.credentials is not None or modification.clear_credentials:
                credentials_version += 1
                sealed = modification.credentials
                values.update(
                    sealed_credentials=sealed.value if sealed else None,
                    credentials_key_id=sealed.key_id if sealed else None,
                    credentials_version=credentials_version,
                    credentials_updated_at=now if sealed else None,
                )
            spec = modification.spec
            digest = item_digest(kind, before.item_id, name, spec, credentials_version)
            unchanged = (
                not values
                and modification.partition == before.partition
                and modification.enabled == before.enabled
                and spec == before.spec
            )
            if unchanged:
                return before, before
            values.update(
                partition=modification.partition,
                enabled=modification.enabled,
                spec=spec_document(spec),
                capability=capability(spec),
                agent_id=pinned_agent(spec),
                digest=digest,
                revision=before.revision + 1,
                updated_at=now,
            )
            if not modification.enabled:
                values.update(poller_id=None, state=AssignmentState.DISABLED.value, state_reason="disabled")
            elif modification.partition != before.partition or not before.enabled:
                values.update(
                    poller_id=None,
                    state=AssignmentState.UNASSIGNED.value,
                    state_reason="waiting for dispatch",
                )
            if "state" in values and values["state"] != before.assignment.state.value:
                values["state_changed_at"] = now
            updated = await conn.execute(work_items.update().where(key).values(values).returning(work_items))
            after = _item(updated.one())
        return before, after

    async def delete(self, tenant: str, kind: WorkKind, name: str) -> WorkItem:
        """Delete an item (and its sealed credentials); returns it as it was."""
        key = self._key(tenant, kind, name)
        async with self._db.begin() as conn:
            row = (await conn.execute(work_items.delete().where(key).returning(work_items))).first()
        if row is None:
            raise NotFound(f"{kind.value} {name!r} not found")
        return _item(row)

    # the edge

    async def assigned_work(self, tenant: str, poller_id: str) -> list[AssignedWork]:
        """The items a poller runs now, with their sealed credentials, in one read (so the
        configuration and its version describe one moment)."""
        query = (
            sa.select(work_items)
            .where(
                work_items.c.tenant == tenant,
                work_items.c.poller_id == poller_id,
                work_items.c.state == AssignmentState.ASSIGNED.value,
            )
            .order_by(work_items.c.kind, work_items.c.name)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AssignedWork(
                _item(row),
                Sealed(row.sealed_credentials, row.credentials_key_id) if row.sealed_credentials else None,
                row.digest,
            )
            for row in rows
        ]

    # the leader

    async def partitions(self) -> list[tuple[str, str]]:
        """Every (tenant, partition) that has items or pollers."""
        async with self._db.connect() as conn:
            with_items = sa.select(work_items.c.tenant, work_items.c.partition).distinct()
            with_pollers = sa.select(pollers.c.tenant, pollers.c.partition).distinct()
            rows = (await conn.execute(sa.union(with_items, with_pollers))).all()
        return sorted((row[0], row[1]) for row in rows)

    async def dispatch_view(self, tenant: str, partition: str) -> DispatchView:
        """The items and pollers the leader plans `partition` from (see DispatchView)."""
        view = DispatchView(tenant, partition)
        async with self._db.connect() as conn:
            rows = await conn.execute(
                sa.select(*_PLANNED_COLUMNS).where(
                    work_items.c.tenant == tenant, work_items.c.partition == partition
                )
            )
            view.items = [_planned(row) for row in rows]
            poller_rows = (
                await conn.execute(
                    sa.select(
                        pollers.c.poller_id,
                        pollers.c.partition,
                        pollers.c.state,
                        sa.cast(pollers.c.capabilities, sa.Text).label("capabilities"),
                        pollers.c.desired_config_version,
                    ).where(
                        pollers.c.tenant == tenant,
                        sa.or_(
                            pollers.c.partition == partition,
                            pollers.c.poller_id.in_(
                                sa.select(work_items.c.poller_id).where(
                                    work_items.c.tenant == tenant,
                                    work_items.c.partition == partition,
                                    work_items.c.poller_id.is_not(None),
                                )
                            ),
                        ),
                    )
                )
            ).all()
            ids = [row.poller_id for row in poller_rows]
            agent_caps: dict[str, dict[str, frozenset[str]]] = defaultdict(dict)
            if ids:
                for agent in await conn.execute(
                    sa.select(
                        agents.c.poller_id,
                        agents.c.agent_id,
                        sa.cast(agents.c.capabilities, sa.Text).label("capabilities"),
                    ).where(
                        agents.c.tenant == tenant,
                        one_of(conn, agents.c.poller_id, ids),
                        agents.c.state.in_(_USABLE_AGENTS),
                    )
                ):
                    agent_caps[agent.poller_id][agent.agent_id] = _capability_set(agent.capabilities)
                foreign = await conn.execute(
                    sa.select(*_PLANNED_COLUMNS).where(
                        work_items.c.tenant == tenant,
                        work_items.c.partition != partition,
                        one_of(conn, work_items.c.poller_id, ids),
                    )
                )
                view.foreign = [_planned(row) for row in foreign]
        for row in poller_rows:
            view.pollers[row.poller_id] = ViewPoller(
                poller_id=row.poller_id,
                partition=row.partition,
                state=PollerState(row.state),
                capabilities=_capability_set(row.capabilities),
                agents=agent_caps.get(row.poller_id, {}),
                desired_version=row.desired_config_version,
            )
        return view

    async def apply_plan(
        self,
        tenant: str,
        writes: Sequence[PlacementWrite],
        versions: Callable[[Sequence[PlacementWrite]], dict[str, str]],
        transitions: Callable[[Sequence[PlacementWrite]], list[Transition]],
        leader: LeaderInfo,
        replica_id: str,
        now: datetime,
    ) -> tuple[list[PlacementWrite], dict[str, str]]:
        """Write placements and poller versions in one fenced transaction.

        A placement is written only where the item is still at the revision planned from
        (an operator's change since wins; it asked for another round). `versions` and
        `transitions` give the poller versions and the transitions that follow from the
        placements written. Returns the placements written and the versions that changed.
        Raises Fenced when a later leadership wrote.
        """
        written: list[PlacementWrite] = []
        async with self._db.begin() as conn:
            for start in range(0, len(writes), WRITE_BATCH):
                batch = writes[start : start + WRITE_BATCH]
                if await _write_placements(conn, batch, now) == len(batch):
                    written.extend(batch)
                else:
                    # Some items changed (or went) since they were read: find which kept up.
                    written.extend(await self._still_planned(conn, batch))
            changed = await self._write_versions(conn, tenant, versions(written))
            await record_transitions(conn, transitions(written), replica_id, leader.fencing_token)
            await hold_fence(conn, leader, now)
        return written, changed

    @staticmethod
    async def _still_planned(conn: AsyncConnection, batch: Sequence[PlacementWrite]) -> list[PlacementWrite]:
        ids = [w.item.placeable.item_id for w in batch]
        rows = await conn.execute(
            sa.select(
                work_items.c.item_id, work_items.c.revision, work_items.c.poller_id, work_items.c.state
            ).where(work_items.c.item_id.in_(ids))
        )
        now_at = {row.item_id: (row.revision, row.poller_id, row.state) for row in rows}
        return [
            w
            for w in batch
            if now_at.get(w.item.placeable.item_id)
            == (w.item.revision, w.placement.poller_id, w.placement.state.value)
        ]

    @staticmethod
    async def _write_versions(conn: AsyncConnection, tenant: str, versions: dict[str, str]) -> dict[str, str]:
        if not versions:
            return {}
        current = dict(
            (
                await conn.execute(
                    sa.select(pollers.c.poller_id, pollers.c.desired_config_version).where(
                        pollers.c.tenant == tenant, pollers.c.poller_id.in_(list(versions))
                    )
                )
            ).all()
        )
        changed = {p: v for p, v in versions.items() if p in current and current[p] != v}
        if changed:
            await conn.execute(
                pollers.update()
                .where(pollers.c.tenant == tenant, pollers.c.poller_id == sa.bindparam("k_poller"))
                .values(desired_config_version=sa.bindparam("k_version")),
                [{"k_poller": p, "k_version": v} for p, v in changed.items()],
            )
        return changed

    # key rotation

    async def sealed_credentials(self, except_key: str) -> list[tuple[str, str, Sealed]]:
        """(tenant, item id, sealed value) of every credential sealed with another key."""
        query = sa.select(
            work_items.c.tenant,
            work_items.c.item_id,
            work_items.c.sealed_credentials,
            work_items.c.credentials_key_id,
        ).where(work_items.c.sealed_credentials.is_not(None), work_items.c.credentials_key_id != except_key)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (row.tenant, row.item_id, Sealed(row.sealed_credentials, row.credentials_key_id)) for row in rows
        ]

    async def reseal(self, item_id: str, old: Sealed, new: Sealed) -> bool:
        """Replace one sealed value, unless it changed meanwhile; True when replaced."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                work_items.update()
                .where(work_items.c.item_id == item_id, work_items.c.sealed_credentials == old.value)
                .values(sealed_credentials=new.value, credentials_key_id=new.key_id)
            )
        return bool(result.rowcount)

    # helpers

    @staticmethod
    def _key(tenant: str, kind: WorkKind, name: str) -> sa.ColumnElement[bool]:
        return (
            (work_items.c.tenant == tenant) & (work_items.c.kind == kind.value) & (work_items.c.name == name)
        )

    @staticmethod
    async def _require_partition(conn: AsyncConnection, tenant: str, partition: str) -> None:
        await require_tenant(conn, tenant)
        exists = await conn.scalar(
            sa.select(partitions.c.name).where(partitions.c.tenant == tenant, partitions.c.name == partition)
        )
        if exists is None:
            raise NotFound(f"partition {partition!r} not found: create it first (srctl partitions create)")
