"""Integration source credentials: sealed in the store (read the raw rows), never in logs or
admin answers, decrypted only into the stream of the poller that runs the source, and
re-sealed under a new key by `srcore rotate-key`."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from serviceradar.admin.v1 import assignment_service_pb2 as assignment_pb
from serviceradar.admin.v1 import source_service_pb2 as source_pb
from serviceradar.admin.v1 import source_service_pb2_grpc as source_grpc
from serviceradar.edge.v1 import config_pb2
from serviceradar.edge.v1 import edge_service_pb2 as pb
from srcore.security import crypto
from srcore.security.credentials import CredentialVault, Sealed
from tests.dispatch.conftest import World, _world
from tests.dispatch.support import names

SECRET = "s3cr3t-api-key-that-must-not-leak"
PASSWORD = "hunter2-but-longer"


def create_request(**credentials: str) -> source_pb.CreateSourceRequest:
    """An Armis source in dc1 with the given credentials."""
    return source_pb.CreateSourceRequest(
        name="armis",
        spec=source_pb.SourceSpec(
            partition="dc1", kind=config_pb2.SOURCE_KIND_ARMIS, endpoint="https://acme.armis.example/api/v1"
        ),
        credentials=credentials,
    )


def leaked(values: list[Any]) -> list[str]:
    """The secrets found anywhere in `values` (messages, rows, strings, bytes)."""
    text = ""
    for value in values:
        if isinstance(value, Message):
            text += text_format.MessageToString(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            text += bytes(value).decode("latin-1")
        else:
            text += repr(value)
    return [s for s in (SECRET, PASSWORD) if s in text]


async def test_credentials_are_sealed_write_only_and_reach_only_their_poller(
    any_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world, operator = any_world, any_world.operator
    sources = source_grpc.SourceServiceStub(operator.channel)
    await operator.partition("dc1")
    runner = await world.poller("p-armis", "dc1", ["armis"])
    other = await world.poller("p-icmp", "dc1", ["icmp"])
    await operator.check("gw", "dc1")

    created = await sources.CreateSource(create_request(api_key=SECRET, password=PASSWORD))
    assert list(created.source.credential_names) == ["api_key", "password"]
    config = await runner.sync().config_where(lambda c: names(c) == {"armis"})
    assert dict(config.config.sources[0].credentials) == {"api_key": SECRET, "password": PASSWORD}
    others = await other.sync().config_where(lambda c: names(c) == {"gw"})

    answers: list[Any] = [created, others]
    answers.append(await sources.GetSource(source_pb.GetSourceRequest(name="armis")))
    answers.append(await sources.ListSources(source_pb.ListSourcesRequest()))
    answers.append(await operator.assignments.ListAssignments(assignment_pb.ListAssignmentsRequest()))
    answers.append(
        await sources.UpdateSource(
            source_pb.UpdateSourceRequest(
                name="armis", credentials={"api_key": SECRET}, update_mask=FieldMask(paths=["credentials"])
            )
        )
    )
    answers += await world.site.audit()
    assert not leaked(answers), "admin answers, the other poller's stream and the audit log"

    rows = await world.site.rows("work_items")
    assert not leaked(rows), "the store holds credentials only sealed"
    source = next(r for r in rows if r["kind"] == "source")
    assert source["credentials_key_id"] == "local-1" and source["sealed_credentials"]
    assert source["credentials_version"] == 2, "rewriting credentials makes a new version"
    events = await world.site.rows("event_outbox")
    assert not leaked(events) and not leaked(await world.site.rows("state_transitions"))
    assert not leaked([r.getMessage() for r in caplog.records]), "no log line carries a credential"

    # The rewrite reached the runner; the update kept the other credential out.
    refreshed = await runner.sync().next()
    assert dict(refreshed.config.sources[0].credentials) == {"api_key": SECRET}


def _key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


async def test_rotate_key_reseals_under_the_newest_key(tmp_path: Path) -> None:
    old, new = _key("2024-01"), _key("2025-06")
    data_dir = tmp_path / "data"
    async for world in _world(data_dir, secret_keys=[old]):
        await world.operator.partition("dc1")
        await source_grpc.SourceServiceStub(world.operator.channel).CreateSource(
            create_request(api_key=SECRET)
        )
        before = (await world.site.rows("work_items"))[0]
        assert before["credentials_key_id"] == "2024-01"

        async def rotate(keys: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "SRCORE_SECRET_KEYS": keys}
            command = [sys.executable, "-m", "srcore.cli_main", "rotate-key", "--data-dir", str(data_dir)]
            # In a thread: the core serving from this event loop must go on committing (SQLite
            # has one writer, and rotate-key is another process).
            return await asyncio.to_thread(
                subprocess.run, command, env=env, capture_output=True, text=True, timeout=60, check=False
            )

        done = await rotate(f"{new},{old}")
        assert done.returncode == 0, done.stderr
        assert "re-sealed 1 credentials with key '2025-06'" in done.stdout
        assert SECRET not in done.stdout + done.stderr
        after = (await world.site.rows("work_items"))[0]
        assert after["credentials_key_id"] == "2025-06"
        assert after["sealed_credentials"] != before["sealed_credentials"]
        assert after["credentials_version"] == before["credentials_version"], "same credentials, same version"
        # Only the new key is needed from now on.
        vault = CredentialVault(lambda: crypto.keyring([new]))
        opened = vault.open("default", after["item_id"], Sealed(after["sealed_credentials"], "2025-06"))
        assert opened == {"api_key": SECRET}
        again = await rotate(f"{new},{old}")
        assert "re-sealed 0 credentials" in again.stdout
        missing = await rotate(_key("2030-01"))
        assert missing.returncode == 1 and "2025-06" in missing.stderr and SECRET not in missing.stderr


async def test_credentials_sealed_under_an_unknown_key_fail_the_stream_clearly(world: World) -> None:
    await world.operator.partition("dc1")
    runner = await world.poller("p-armis", "dc1", ["armis"])
    await source_grpc.SourceServiceStub(world.operator.channel).CreateSource(create_request(api_key=SECRET))
    await world.operator.placement_where(lambda p: p.get("armis", ("",))[0] == "assigned")
    await world.site.execute("UPDATE work_items SET sealed_credentials = :v", v=b"\x01\x03abc" + b"\0" * 40)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await runner.edge.SyncConfig(pb.SyncConfigRequest(poller_id="p-armis")).read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "key 'abc'" in (caught.value.details() or "")
