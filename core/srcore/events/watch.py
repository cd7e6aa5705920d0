"""Following the outbox for WatchEvents: replay from a position, then new events as they commit.

Sequences are handed out when a row is inserted, not when its transaction commits, so a
reader can see sequence 11 before 10 commits. A follower that simply remembered "everything
up to 11" would never deliver 10. It therefore remembers the numbers it skipped (gaps) and
looks for them again on every poll, for `GAP_TIMEOUT` seconds: long enough for any
transaction that writes events, after which a gap is taken for a rollback and forgotten.
Events of one entity still arrive in order: the transaction that changes an entity holds its
row lock while it writes the event, so a later change of it gets a later sequence and commits
later.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from datetime import datetime

from srcore.domain.errors import InvalidArgument
from srcore.events.outbox import EventFilter, Outbox, OutboxSignal, StoredEvent, wait_signalled

GAP_TIMEOUT = 60.0
# Bounds the memory and the query of a follower after a large rolled-back batch: the oldest
# gaps are given up first.
MAX_GAPS = 1000
SCAN_LIMIT = 500


def encode_token(cursor: int, gaps: Iterable[int]) -> str:
    """An opaque resume token for a follower's position."""
    document = json.dumps({"c": cursor, "g": sorted(gaps)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, list[int]]:
    """The position in a resume token; InvalidArgument for anything this server did not issue."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
        cursor, gaps = document["c"], document["g"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidArgument("resume_token", "not a token this server issued") from exc
    valid = (
        isinstance(cursor, int)
        and cursor >= 0
        and isinstance(gaps, list)
        and len(gaps) <= MAX_GAPS
        and all(isinstance(g, int) and 0 < g <= cursor for g in gaps)
    )
    if not valid:
        raise InvalidArgument("resume_token", "not a token this server issued")
    return cursor, gaps


class Follower:
    """A position in the outbox (a cursor plus the gaps below it) that reads forward."""

    def __init__(
        self,
        outbox: Outbox,
        flt: EventFilter,
        cursor: int,
        gaps: Iterable[int] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._filter = flt
        self._cursor = cursor
        self._clock = clock
        deadline = clock() + GAP_TIMEOUT
        self._gaps: dict[int, float] = {seq: deadline for seq in gaps}

    def token(self) -> str:
        """The resume token of the current position."""
        return encode_token(self._cursor, self._gaps)

    def _add_gaps(self, first: int, last: int, deadline: float) -> None:
        for seq in range(max(first, last - MAX_GAPS + 1), last + 1):
            self._gaps[seq] = deadline
        if len(self._gaps) > MAX_GAPS:
            for seq in sorted(self._gaps)[: len(self._gaps) - MAX_GAPS]:
                del self._gaps[seq]

    async def poll(self, limit: int = SCAN_LIMIT) -> tuple[list[tuple[StoredEvent, str]], bool]:
        """Matching events not delivered yet, each with the token to resume after it, and
        whether more rows are waiting (the read hit `limit`)."""
        now = self._clock()
        for seq in [seq for seq, deadline in self._gaps.items() if deadline <= now]:
            del self._gaps[seq]
        rows = await self._outbox.scan(self._filter, self._cursor, sorted(self._gaps), limit)
        out: list[tuple[StoredEvent, str]] = []
        deadline = now + GAP_TIMEOUT
        for row in rows:
            if row.seq <= self._cursor:
                self._gaps.pop(row.seq, None)
            else:
                if row.seq > self._cursor + 1:
                    self._add_gaps(self._cursor + 1, row.seq - 1, deadline)
                self._cursor = row.seq
            if row.event is not None:
                out.append((row.event, self.token()))
        return out, len(rows) >= limit


async def open_follower(
    outbox: Outbox, flt: EventFilter, since: datetime | None, resume_token: str
) -> Follower:
    """A follower positioned by the resume token, else at `since`, else after the last event."""
    if resume_token:
        cursor, gaps = decode_token(resume_token)
        return Follower(outbox, flt, cursor, gaps)
    if since is not None:
        first = await outbox.first_seq_since(since)
        if first is not None:
            return Follower(outbox, flt, first - 1)
    return Follower(outbox, flt, await outbox.last_seq())


async def follow(
    follower: Follower, signal: OutboxSignal, poll_interval: float
) -> AsyncGenerator[tuple[StoredEvent, str], None]:
    """Events from the follower's position on, forever: at once after this replica commits
    events, else within `poll_interval` (rows other replicas wrote)."""
    while True:
        waiter = signal.waiter()
        items, more = await follower.poll()
        for item in items:
            yield item
        if not more:
            await wait_signalled(waiter, poll_interval)
