"""The outbox on the real stores: written with the state change, read in order, followed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from srcore.domain.errors import InvalidArgument
from srcore.domain.model import Transition
from srcore.events.outbox import EventFilter, Outbox, OutboxSignal
from srcore.events.schema import relative_subject
from srcore.events.watch import GAP_TIMEOUT, Follower, decode_token, follow, open_follower
from srcore.settings import Settings, load_settings
from srcore.store.database import Database
from srcore.store.tables import event_outbox, state_transitions
from srcore.store.transitions import record_transitions
from tests.events.support import FENCING_TOKEN, REPLICA, chain, record

STATES = ["healthy", "degraded", "offline", "recovering", "healthy"]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Database:
    """The embedded SQLite store and a PostgreSQL one."""
    name = "sqlite_db" if request.param == "sqlite" else "db"
    database: Database = request.getfixturevalue(name)
    return database


async def test_every_transition_writes_one_event_in_the_same_transaction(store: Database) -> None:
    transitions = chain("acme", "poller", "edge-1", STATES) + chain(
        "acme", "agent", "edge-1/a1", ["connected", "down"]
    )
    await record(store, transitions)
    events = await Outbox(store).page(EventFilter(), 0, 100)
    assert [
        (e.event.entity_type, e.event.entity_id, e.event.old_state, e.event.new_state) for e in events
    ] == [(t.entity_type, t.entity_id, t.from_state, t.to_state) for t in transitions]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(e.published_at is None for e in events)
    assert {(e.event.replica, e.event.fencing_token) for e in events} == {(REPLICA, FENCING_TOKEN)}
    assert len({e.event.id for e in events}) == len(events)
    async with store.connect() as conn:
        subjects = (
            await conn.execute(sa.select(event_outbox.c.subject).order_by(event_outbox.c.seq))
        ).scalars()
        assert list(subjects) == [relative_subject("acme", t.entity_type, t.to_state) for t in transitions]

    # The state change fails after the events were written: neither history nor events remain.
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await record_transitions(conn, chain("acme", "poller", "edge-2", STATES), REPLICA, FENCING_TOKEN)
            raise RuntimeError("the state write failed")
    assert len(await Outbox(store).page(EventFilter(), 0, 100)) == len(transitions)
    async with store.connect() as conn:
        history = await conn.scalar(sa.select(sa.func.count()).select_from(state_transitions))
    assert history == len(transitions)


async def test_filters_and_pages(store: Database) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    await record(store, chain("acme", "poller", "edge-1", STATES, start))
    await record(
        store, chain("acme", "agent", "edge-1/a1", ["connected", "disconnected", "connected"], start)
    )
    await record(store, chain("beta", "poller", "edge-1", STATES, start + timedelta(minutes=30)))
    outbox = Outbox(store)

    async def ids(flt: EventFilter) -> list[str]:
        return [
            f"{e.event.tenant}/{e.event.entity_id}/{e.event.type}" for e in await outbox.page(flt, 0, 100)
        ]

    assert len(await ids(EventFilter(tenant="acme"))) == 6
    assert await ids(EventFilter(tenant="beta", event_type="offline")) == ["beta/edge-1/offline"]
    assert await ids(EventFilter(entity_type="agent")) == [
        "acme/edge-1/a1/disconnected",
        "acme/edge-1/a1/connected",
    ]
    assert await ids(
        EventFilter(tenant="acme", entity_type="poller", entity_id="edge-1", event_type="healthy")
    ) == ["acme/edge-1/healthy"]
    assert len(await ids(EventFilter(since=start + timedelta(minutes=15)))) == 4
    assert await ids(EventFilter(tenant="gamma")) == []

    everything = await outbox.page(EventFilter(), 0, 100)
    pages, after = [], 0
    while page := await outbox.page(EventFilter(), after, 4):
        pages.append(page)
        after = page[-1].seq
    assert [len(p) for p in pages] == [4, 4, 2]
    assert [e.seq for p in pages for e in p] == [e.seq for e in everything]


async def test_a_follower_delivers_rows_that_commit_out_of_sequence_order(db: Database) -> None:
    # Two writers: the first takes its sequence number, the second commits before it does.
    outbox = Outbox(db)
    follower = Follower(outbox, EventFilter(tenant="acme"), await outbox.last_seq())
    slow = await db.engine.connect()
    transaction = await slow.begin()
    await record_transitions(slow, chain("acme", "poller", "slow", ["healthy", "offline"]), REPLICA, 1)
    await record(db, chain("acme", "poller", "fast", ["healthy", "degraded"]))
    await record(db, chain("beta", "poller", "other", ["healthy", "degraded"]))

    seen, _ = await follower.poll()
    assert [e.event.entity_id for e, _token in seen] == ["fast"]
    # A client that reconnects with the token of "fast" still gets "slow" later.
    resumed = Follower(outbox, EventFilter(tenant="acme"), *decode_token(seen[-1][1]))

    await transaction.commit()
    await slow.close()
    later, _ = await follower.poll()
    assert [e.event.entity_id for e, _token in later] == ["slow"]
    again, _ = await resumed.poll()
    assert [e.event.entity_id for e, _token in again] == ["slow"]
    assert (await follower.poll())[0] == []


async def test_a_rolled_back_gap_is_given_up_after_the_gap_timeout(db: Database) -> None:
    now = [0.0]
    outbox = Outbox(db)
    follower = Follower(outbox, EventFilter(), await outbox.last_seq(), clock=lambda: now[0])
    with pytest.raises(RuntimeError):
        async with db.begin() as conn:
            await record_transitions(
                conn, chain("acme", "poller", "gone", ["healthy", "offline"]), REPLICA, 1
            )
            raise RuntimeError("rolled back")
    await record(db, chain("acme", "poller", "kept", ["healthy", "offline"]))
    seen, _ = await follower.poll()
    assert [e.event.entity_id for e, _token in seen] == ["kept"]
    assert decode_token(follower.token())[1] != []
    now[0] += GAP_TIMEOUT + 1
    await follower.poll()
    assert decode_token(follower.token())[1] == []


async def test_follow_wakes_on_this_replicas_commits(sqlite_db: Database) -> None:
    outbox = Outbox(sqlite_db)
    signal = OutboxSignal(sqlite_db)
    follower = await open_follower(outbox, EventFilter(entity_type="poller"), None, "")
    # A poll interval far longer than the test: only the commit signal can wake the follower.
    stream = follow(follower, signal, poll_interval=3600)
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    assert not pending.done()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await record(sqlite_db, chain("acme", "poller", "p1", ["healthy", "offline"]))
    first = await asyncio.wait_for(pending, 5)
    assert loop.time() - started < 1
    assert first[0].event.entity_id == "p1"
    await stream.aclose()
    signal.close()


async def test_open_follower_replays_from_since(sqlite_db: Database) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    await record(sqlite_db, chain("acme", "poller", "old", ["healthy", "offline"], old))
    await record(sqlite_db, chain("acme", "poller", "new", ["healthy", "offline"]))
    outbox = Outbox(sqlite_db)
    since = await open_follower(outbox, EventFilter(), datetime.now(UTC) - timedelta(days=1), "")
    assert [e.event.entity_id for e, _ in (await since.poll())[0]] == ["new"]
    now = await open_follower(outbox, EventFilter(), None, "")
    assert (await now.poll())[0] == []
    with pytest.raises(InvalidArgument, match="resume_token"):
        await open_follower(outbox, EventFilter(), None, "bm90IGEgdG9rZW4")


@pytest.mark.parametrize("keep_unpublished", [True, False])
async def test_retention_never_drops_an_unpublished_event_when_relaying(
    store: Database, keep_unpublished: bool
) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    await record(store, chain("acme", "poller", "p1", STATES, old))
    await record(store, chain("acme", "poller", "p2", STATES))
    outbox = Outbox(store)
    first = await outbox.page(EventFilter(), 0, 2)
    await outbox.mark_published([e.seq for e in first], datetime.now(UTC))
    pruned = await outbox.prune(
        datetime.now(UTC) - timedelta(days=7), keep_unpublished=keep_unpublished, chunk=1
    )
    left = await outbox.page(EventFilter(), 0, 100)
    assert pruned == (2 if keep_unpublished else 4)
    assert [e.event.entity_id for e in left] == ["p1"] * (2 if keep_unpublished else 0) + ["p2"] * 4


def test_event_settings_are_validated_naming_the_setting() -> None:
    for name, value in [
        ("events_subject_prefix", "sr.*"),
        ("events_subject_prefix", "sr..infra"),
        ("nats_stream", "SR.INFRA"),
        ("events_encoding", "xml"),
        ("events_relay_batch_size", "0"),
        ("events_duplicate_window", "0"),
        ("events_max_bytes", "0"),
    ]:
        with pytest.raises(InvalidArgument, match=name):
            load_settings(environ={f"SRCORE_{name.upper()}": value})
    assert Settings().validate().events_subject_prefix == "sr.infra"


async def test_an_event_that_cannot_be_a_subject_fails_its_transaction(sqlite_db: Database) -> None:
    bad = Transition("acme", "poller", "p1", "healthy", "off line", "test", datetime.now(UTC))
    with pytest.raises(ValueError, match="subject token"):
        await record(sqlite_db, [bad])
    assert await Outbox(sqlite_db).last_seq() == 0
