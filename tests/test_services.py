"""The test fixtures reach the real services, not something that merely listens on a port."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable

import aetcd
import nats
import psycopg
import pytest
import sqlalchemy as sa
from nats.js.errors import NotFoundError

from tests import services


def test_postgres_is_a_supported_server(postgres_url: str) -> None:
    # DROP DATABASE ... WITH (FORCE) in the fixtures needs 13; production targets >= 13 too.
    assert services.check_postgres(postgres_url) >= 130000


def test_fresh_database_is_empty_and_writable(fresh_database: str) -> None:
    assert fresh_database.startswith("postgresql+psycopg://")
    name = fresh_database.rsplit("/", 1)[1]
    assert name.startswith(services.TEST_DATABASE_PREFIX)
    engine = sa.create_engine(fresh_database)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == name
            tables = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert tables == 0
            conn.execute(sa.text("CREATE TABLE probe (id int PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO probe VALUES (1), (2)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(id) FROM probe")).scalar_one() == 3
    finally:
        engine.dispose()


def test_database_factory_gives_distinct_databases(
    database_factory: Callable[[], str],
) -> None:
    first, second = database_factory(), database_factory()
    assert first != second


def _database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert row is not None
    return bool(row[0])


def test_drop_database_disconnects_users_and_removes_it(postgres_url: str) -> None:
    name = services.create_database(postgres_url)
    assert _database_exists(postgres_url, name)
    # An open session must not block the drop (WITH (FORCE)), or a leaked connection in one
    # test would leave databases behind.
    lingering = psycopg.connect(services.with_database(postgres_url, name))
    try:
        services.drop_database(postgres_url, name)
    finally:
        lingering.close()
    assert not _database_exists(postgres_url, name)


def test_drop_database_refuses_non_test_names(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="not a test database"):
        services.drop_database(postgres_url, "postgres")


def test_with_database_rewrites_only_scheme_and_path() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    assert (
        services.with_database(url, "x", driver="psycopg")
        == "postgresql+psycopg://postgres@127.0.0.1:5432/x?sslmode=disable"
    )
    assert services.with_database("postgresql+psycopg://u@h/db", "y") == "postgresql://u@h/y"


def test_etcd_is_healthy(etcd_endpoints: list[str]) -> None:
    assert etcd_endpoints
    for endpoint in services.parse_endpoints(",".join(etcd_endpoints)):
        assert services.check_etcd(endpoint)["health"] == "true"


async def test_etcd_round_trip_over_grpc(etcd_endpoints: list[str]) -> None:
    # /health is HTTP; the core talks to etcd over its v3 gRPC API, so prove that works too.
    endpoint = services.parse_endpoints(etcd_endpoints[0])[0]
    key = f"/srcore-test/{secrets.token_hex(8)}".encode()
    async with aetcd.Client(host=endpoint.host, port=endpoint.port) as client:
        try:
            await client.put(key, b"value")
            result = await client.get(key)
            assert result is not None
            assert result.value == b"value"
        finally:
            await client.delete(key)
        assert await client.get(key) is None


def test_nats_greets_with_jetstream(nats_url: str) -> None:
    info = services.check_nats(services.nats_endpoint(nats_url))
    assert info["jetstream"] is True
    assert info["server_id"]


async def test_nats_jetstream_account_and_dedup(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=services.CONNECT_TIMEOUT_SECONDS)
    try:
        js = nc.jetstream()
        account = await js.account_info()
        assert account.limits is not None
        # The outbox relay relies on JetStream message-id deduplication; check the server does it.
        stream = f"SRCORE_TEST_{secrets.token_hex(4).upper()}"
        subject = f"srcore.test.{stream.lower()}"
        await js.add_stream(name=stream, subjects=[subject])
        try:
            first = await js.publish(subject, b"event", headers={"Nats-Msg-Id": "m-1"})
            again = await js.publish(subject, b"event", headers={"Nats-Msg-Id": "m-1"})
            assert not first.duplicate
            assert again.duplicate
            assert again.seq == first.seq
            assert (await js.stream_info(stream)).state.messages == 1
        finally:
            await js.delete_stream(stream)
        with pytest.raises(NotFoundError):
            await js.stream_info(stream)
    finally:
        await nc.close()


def test_free_port_can_be_bound() -> None:
    port = services.free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_parse_endpoints_accepts_lists_and_schemes() -> None:
    assert [str(e) for e in services.parse_endpoints("a:1, http://b:2,c")] == [
        "a:1",
        "b:2",
        "c:2379",
    ]
    with pytest.raises(ValueError):
        services.parse_endpoints(" , ")
