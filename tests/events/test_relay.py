"""The relay against real PostgreSQL and real NATS JetStream: once, in order, fenced."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import nats
import psycopg
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import RawStreamMsg

from srcore.domain.model import PollerState, Registration
from srcore.events.bus import NatsBus
from srcore.events.config import EventConfig
from srcore.events.outbox import Outbox, OutboxSignal
from srcore.events.relay import EXPECTED_LAST_MSG_ID, EXPECTED_LAST_SEQUENCE, MSG_ID, Relay, ensure_stream
from srcore.events.schema import JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE, tenant_filter
from srcore.store.database import Database
from srcore.store.pollers import PollerRepository
from srcore.store.tables import event_outbox
from tests.events.support import (
    FENCING_TOKEN,
    REPLICA,
    NatsServer,
    backlog,
    chain,
    decode,
    drained,
    event_config,
    record,
    running_relay,
    stream_messages,
    wait_for,
)

STATES = ["healthy", "degraded", "healthy", "degraded", "offline", "recovering", "healthy"]


async def outbox_order(db: Database) -> dict[str, list[str]]:
    """Event ids per entity, in outbox (sequence) order."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                event_outbox.select()
                .with_only_columns(event_outbox.c.entity_key, event_outbox.c.event_id)
                .order_by(event_outbox.c.seq)
            )
        ).all()
    order: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        order[row.entity_key].append(str(row.event_id))
    return order


def stream_order(messages: list[RawStreamMsg]) -> dict[str, list[str]]:
    """Event ids per entity, in stream order."""
    order: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        event = decode(message)
        order[f"{event.entity_type}:{event.entity_id}"].append(event.id)
    return order


def assert_once_in_order(messages: list[RawStreamMsg], expected: dict[str, list[str]]) -> None:
    """Every outbox event is in the stream exactly once, in outbox order per entity."""
    ids = [decode(m).id for m in messages]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert sorted(ids) == sorted(i for entity in expected.values() for i in entity), "events lost or foreign"
    assert stream_order(messages) == expected


async def test_each_transition_is_one_message_with_subject_and_payload(
    db: Database, bus: NatsBus, config: EventConfig, nc: NatsClient
) -> None:
    repo = PollerRepository(db)
    now = datetime.now(UTC)
    await repo.ensure_tenant("acme", now)
    await repo.save_registration(
        Registration(tenant="acme", poller_id="edge-1", partition="dc1"),
        PollerState.HEALTHY, "s1", REPLICA, "v1", now, None, FENCING_TOKEN,
    )  # fmt: skip
    transitions = [
        *chain("acme", "poller", "edge-1", ["healthy", "degraded"], now),
        *chain("acme", "agent", "edge-1/a1", ["connected", "disconnected"], now),
        *chain("acme", "checker", "icmp-gw", ["active", "failing"], now),
    ]
    await record(db, transitions)
    async with running_relay(db, bus, config):
        await drained(db)

    messages = await stream_messages(nc.jetstream(), config.stream)
    assert [m.subject for m in messages] == [
        f"{config.prefix}.acme.poller.degraded",
        f"{config.prefix}.acme.agent.disconnected",
        f"{config.prefix}.acme.checker.failing",
    ]
    for message, transition in zip(messages, transitions, strict=True):
        event = decode(message)
        assert message.headers is not None
        assert message.headers[MSG_ID] == event.id
        assert message.headers["Content-Type"] == PROTOBUF_CONTENT_TYPE
        assert (event.tenant, event.entity_type, event.entity_id) == (
            "acme", transition.entity_type, transition.entity_id,
        )  # fmt: skip
        assert (event.old_state, event.new_state, event.type) == (
            transition.from_state, transition.to_state, transition.to_state,
        )  # fmt: skip
        assert event.reason == transition.reason
        assert event.time.ToDatetime(tzinfo=UTC) == transition.at
        assert (event.replica, event.fencing_token) == (REPLICA, FENCING_TOKEN)
    # One batch, one chain: the first message expects the stream empty, each later one its
    # predecessor right before it.
    headers = [m.headers or {} for m in messages]
    assert headers[0][EXPECTED_LAST_SEQUENCE] == "0"
    assert [h[EXPECTED_LAST_MSG_ID] for h in headers[1:]] == [h[MSG_ID] for h in headers[:-1]]
    # Pollers and agents carry their poller's partition; a checker has none here.
    assert [decode(m).partition for m in messages] == ["dc1", "dc1", ""]
    async with db.connect() as conn:
        stamped = (
            await conn.execute(event_outbox.select().where(event_outbox.c.published_at.is_(None)))
        ).all()
    assert stamped == []


async def test_replaying_published_rows_publishes_nothing_new(
    db: Database, bus: NatsBus, config: EventConfig, nc: NatsClient
) -> None:
    for poller in range(20):
        await record(db, chain("acme", "poller", f"p{poller}", STATES))
    async with running_relay(db, bus, config):
        await drained(db)
    js = nc.jetstream()
    first = await stream_messages(js, config.stream)
    assert len(first) == 20 * (len(STATES) - 1)

    # A fresh relay over a fully published outbox has nothing to do.
    async with running_relay(db, bus, config):
        await asyncio.sleep(0.3)
    assert (await js.stream_info(config.stream)).state.messages == len(first)

    # The stamps are lost (say, a restore of an older backup): every row goes out again, and
    # JetStream drops each one by its message id.
    async with db.begin() as conn:
        await conn.execute(event_outbox.update().values(published_at=None))
    async with running_relay(db, bus, config):
        await drained(db)
    again = await stream_messages(js, config.stream)
    assert [m.seq for m in again] == [m.seq for m in first]
    assert_once_in_order(again, await outbox_order(db))


async def test_nats_outage_during_a_burst_loses_and_duplicates_nothing(
    db: Database, tmp_path: Path, nats_url: str
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    config = event_config(server.url)
    bus = NatsBus(config.nats_url, "srtest", config.max_in_flight)
    bus.start()
    outbox = Outbox(db)
    try:
        await wait_for(lambda: bus.connected, 10, "the NATS connection")
        async with running_relay(db, bus, config):
            for poller in range(10):
                await record(db, chain("acme", "poller", f"p{poller}", STATES))
            await drained(db)
            server.kill()
            # The burst goes on while NATS is down: the backlog grows, nothing is lost.
            sizes = []
            for round_ in range(10):
                await record(db, chain("acme", "agent", f"p{round_}/a1", STATES))
                await record(db, chain("beta", "poller", f"q{round_}", STATES))
                sizes.append(await backlog(outbox))
                await asyncio.sleep(0.05)
            assert sizes == sorted(sizes) and sizes[-1] == 20 * (len(STATES) - 1)
            await asyncio.sleep(1.0)
            assert await backlog(outbox) == sizes[-1]
            server.start()
            await drained(db, timeout=30)
        nc = await nats.connect(server.url)
        try:
            messages = await stream_messages(nc.jetstream(), config.stream)
        finally:
            await nc.close()
        assert_once_in_order(messages, await outbox_order(db))
        assert len(messages) == 30 * (len(STATES) - 1)
    finally:
        await bus.close()
        if server.process is not None:
            server.kill()


async def test_relay_killed_between_publish_and_stamp_duplicates_nothing(
    db: Database, bus: NatsBus, config: EventConfig, nc: NatsClient, fresh_database: str
) -> None:
    for poller in range(30):
        await record(db, chain("acme", "poller", f"p{poller}", STATES))
    total = 30 * (len(STATES) - 1)
    js = nc.jetstream()
    # Another session holds a lock that lets the relay read the outbox and publish, but not
    # stamp rows: the relay is stuck right between publishing and marking when it is killed.
    blocker = await psycopg.AsyncConnection.connect(fresh_database.replace("+psycopg", ""))
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("LOCK TABLE event_outbox IN EXCLUSIVE MODE")
        async with running_relay(db, bus, config):

            async def all_published() -> bool:
                with contextlib.suppress(Exception):
                    return (await js.stream_info(config.stream)).state.messages == total
                return False

            await wait_for(all_published, 20, "every event in the stream")
            await asyncio.sleep(0.2)
        # Killed: every event is in the stream, none is stamped.
        await blocker.execute("ROLLBACK")
    finally:
        await blocker.close()
    assert await backlog(Outbox(db)) == total

    async with running_relay(db, bus, config) as relay:
        await drained(db)
        assert relay.last_error == ""
    messages = await stream_messages(js, config.stream)
    assert_once_in_order(messages, await outbox_order(db))


async def test_two_relays_at_once_store_each_event_once_in_order(
    db: Database, bus: NatsBus, config: EventConfig, nc: NatsClient
) -> None:
    # Two leaders at once (a deposed one that has not noticed yet): the stream's sequence
    # check lets only one chain through at a time, and message ids drop what both sent.
    async def write() -> None:
        for round_ in range(20):
            await record(db, [t for p in range(25) for t in chain("acme", "poller", f"p{p}", STATES[:3])])
            await record(db, chain("acme", "agent", f"p{round_}/a1", STATES))
            await asyncio.sleep(0.01)

    async with running_relay(db, bus, config), running_relay(db, bus, config):
        await write()
        await drained(db, timeout=60)
    messages = await stream_messages(nc.jetstream(), config.stream)
    assert_once_in_order(messages, await outbox_order(db))
    assert len(messages) == 20 * (25 * 2 + len(STATES) - 1)


async def test_a_relay_that_no_longer_leads_publishes_nothing(
    db: Database, bus: NatsBus, config: EventConfig, nc: NatsClient
) -> None:
    await record(db, chain("acme", "poller", "p1", STATES))
    leading = False
    relay = Relay(Outbox(db), bus, config, lambda: leading, OutboxSignal(db))
    await asyncio.wait_for(relay.run(), 5)
    with contextlib.suppress(Exception):
        info = await nc.jetstream().stream_info(config.stream)
        assert info.state.messages == 0
    assert await backlog(Outbox(db)) == len(STATES) - 1


async def test_a_tenants_subjects_carry_only_that_tenants_events(
    db: Database, bus: NatsBus, config: EventConfig, nc: NatsClient
) -> None:
    received: list[str] = []

    async def on_message(message: Msg) -> None:
        received.append(decode(message).tenant)

    live = await nc.subscribe(tenant_filter(config.prefix, "acme"), cb=on_message)
    for poller in range(5):
        await record(db, chain("acme", "poller", f"p{poller}", STATES))
        await record(db, chain("beta", "poller", f"p{poller}", STATES))
        await record(db, chain("acme-2", "poller", f"p{poller}", STATES))
    async with running_relay(db, bus, config):
        await drained(db)
    await wait_for(lambda: len(received) >= 5 * (len(STATES) - 1), 5, "acme's live events")
    await asyncio.sleep(0.2)
    await live.unsubscribe()
    assert received == ["acme"] * 5 * (len(STATES) - 1)

    # A JetStream consumer filtered on the tenant reads the same from the stream.
    js = nc.jetstream()
    sub = await js.subscribe(
        tenant_filter(config.prefix, "beta"), stream=config.stream, ordered_consumer=True
    )
    tenants = [decode(await sub.next_msg(5)).tenant for _ in range(5 * (len(STATES) - 1))]
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(0.5)
    await sub.unsubscribe()
    assert tenants == ["beta"] * 5 * (len(STATES) - 1)


async def test_json_encoding_for_consumers_without_protobuf(
    db: Database, nats_url: str, nc: NatsClient
) -> None:
    config = event_config(nats_url, events_encoding="json")
    bus = NatsBus(config.nats_url, "srtest", config.max_in_flight)
    bus.start()
    try:
        await wait_for(lambda: bus.connected, 10, "the NATS connection")
        await record(db, chain("acme", "poller", "edge-1", ["healthy", "offline"]))
        async with running_relay(db, bus, config):
            await drained(db)
        (message,) = await stream_messages(nc.jetstream(), config.stream)
    finally:
        await bus.close()
        await nc.jetstream().delete_stream(config.stream)
    assert message.headers is not None and message.headers["Content-Type"] == JSON_CONTENT_TYPE
    assert message.data is not None
    document = json.loads(message.data)
    assert document["id"] == message.headers[MSG_ID]
    assert (document["type"], document["entity_type"], document["old_state"]) == (
        "offline",
        "poller",
        "healthy",
    )
    assert document["time"].endswith("Z")


async def test_the_stream_is_created_then_kept_in_line_with_the_settings(
    config: EventConfig, nc: NatsClient
) -> None:
    js = nc.jetstream()
    await ensure_stream(js, config)
    created = (await js.stream_info(config.stream)).config
    assert created.subjects == [f"{config.prefix}.>"]
    assert (created.max_age, created.duplicate_window) == (config.max_age, config.duplicate_window)

    # An operator changed the description by hand; a new retention setting is
    # applied on the next start and leaves those alone.
    await js.update_stream(dataclasses.replace(created, description="tuned by hand", max_msgs=5))
    changed = dataclasses.replace(config, max_age=3600.0, max_msgs=1_000_000)
    await ensure_stream(js, changed)
    updated = (await js.stream_info(config.stream)).config
    assert (updated.max_age, updated.max_msgs, updated.description) == (3600.0, 1_000_000, "tuned by hand")
