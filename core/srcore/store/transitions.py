"""Recording state transitions: history rows written in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from srcore.domain.model import Transition
from srcore.events.outbox import write_events
from srcore.store.tables import state_transitions


def transition_row(t: Transition, replica_id: str, fencing_token: int) -> dict[str, Any]:
    """The history row of one transition."""
    return {
        "tenant": t.tenant,
        "entity_type": t.entity_type,
        "entity_id": t.entity_id,
        "from_state": t.from_state,
        "to_state": t.to_state,
        "reason": t.reason,
        "replica": replica_id,
        "fencing_token": fencing_token,
        "at": t.at,
    }


async def record_transitions(
    conn: AsyncConnection, transitions: Sequence[Transition], replica_id: str, fencing_token: int
) -> None:
    """Write the transitions inside the caller's transaction, so state and history agree.

    Every state change in the core goes through here; events for the outbox are derived
    from the same transitions in the same transaction.
    """
    if transitions:
        await conn.execute(
            state_transitions.insert(), [transition_row(t, replica_id, fencing_token) for t in transitions]
        )
        await write_events(conn, transitions, replica_id, fencing_token)
