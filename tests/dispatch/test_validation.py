"""Bad input to the work item services is INVALID_ARGUMENT naming the field (the message
starts with it, and google.rpc.BadRequest carries it), never INTERNAL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from serviceradar.admin.v1 import check_service_pb2 as check_pb
from serviceradar.admin.v1 import source_service_pb2 as source_pb
from serviceradar.admin.v1 import sweep_service_pb2 as sweep_pb
from serviceradar.edge.v1 import config_pb2
from tests.dispatch.conftest import World, _world
from tests.tenancy.support import invoke

S = "/serviceradar.admin.v1."
ICMP, TCP, HTTP = config_pb2.CHECK_TYPE_ICMP, config_pb2.CHECK_TYPE_TCP, config_pb2.CHECK_TYPE_HTTP


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One core for the whole module: every case is refused, so none changes it."""
    async for world in _world(Path(tmp_path_factory.mktemp("validation")) / "data"):
        await world.operator.partition("dc1")
        await world.operator.check("taken", "dc1")
        yield world


def seconds(value: float) -> Duration:
    """A Duration of `value` seconds."""
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def check(**spec: Any) -> check_pb.CreateCheckRequest:
    """CreateCheck of a valid ICMP check with `spec` fields overridden (name too)."""
    name = spec.pop("name", "new")
    values: dict[str, Any] = {"partition": "dc1", "check_type": ICMP, "target": "10.0.0.1", **spec}
    return check_pb.CreateCheckRequest(name=name, spec=check_pb.CheckSpec(**values))


def sweep(**spec: Any) -> sweep_pb.CreateSweepRequest:
    """CreateSweep of a valid ICMP sweep with `spec` fields overridden."""
    values: dict[str, Any] = {
        "partition": "dc1",
        "cidrs": ["10.0.0.0/24"],
        "icmp_interval": seconds(300),
        **spec,
    }
    return sweep_pb.CreateSweepRequest(name="new", spec=sweep_pb.SweepSpec(**values))


def source(credentials: dict[str, str] | None = None, **spec: Any) -> source_pb.CreateSourceRequest:
    """CreateSource of a valid NetBox source with `spec` fields overridden."""
    values: dict[str, Any] = {
        "partition": "dc1",
        "kind": config_pb2.SOURCE_KIND_NETBOX,
        "endpoint": "https://netbox.example",
        **spec,
    }
    return source_pb.CreateSourceRequest(
        name="new", spec=source_pb.SourceSpec(**values), credentials=credentials
    )


CASES: list[tuple[str, Message, str]] = [
    ("CheckService/CreateCheck", check(name="bad name!"), "name"),
    ("CheckService/CreateCheck", check(partition="DC 1"), "spec.partition"),
    ("CheckService/CreateCheck", check(check_type=0), "spec.check_type"),
    ("CheckService/CreateCheck", check(check_type=99), "spec.check_type"),
    ("CheckService/CreateCheck", check(target="not a host!"), "spec.target"),
    ("CheckService/CreateCheck", check(target=""), "spec.target"),
    ("CheckService/CreateCheck", check(check_type=HTTP, target="ftp://files.example"), "spec.target"),
    ("CheckService/CreateCheck", check(check_type=TCP, target="db1"), "spec.port"),
    ("CheckService/CreateCheck", check(check_type=TCP, target="db1", port=70000), "spec.port"),
    ("CheckService/CreateCheck", check(port=22), "spec.port"),
    ("CheckService/CreateCheck", check(interval=seconds(0.5)), "spec.interval"),
    ("CheckService/CreateCheck", check(interval=seconds(2 * 86400)), "spec.interval"),
    ("CheckService/CreateCheck", check(interval=seconds(10), timeout=seconds(11)), "spec.timeout"),
    ("CheckService/CreateCheck", check(agent_id="rack/3"), "spec.agent_id"),
    ("CheckService/CreateCheck", check(settings={"bad key!": "x"}), "spec.settings"),
    ("SweepService/CreateSweep", sweep(cidrs=[]), "spec.cidrs"),
    ("SweepService/CreateSweep", sweep(cidrs=["10.0.0.1/24"]), "spec.cidrs[0]"),
    ("SweepService/CreateSweep", sweep(cidrs=["10.0.0.0/24", "banana"]), "spec.cidrs[1]"),
    ("SweepService/CreateSweep", sweep(cidrs=["10.0.0.0/4"]), "spec.cidrs[0]"),
    ("SweepService/CreateSweep", sweep(ports=[22, 0]), "spec.ports[1]"),
    ("SweepService/CreateSweep", sweep(icmp_interval=seconds(10)), "spec.icmp_interval"),
    ("SweepService/CreateSweep", sweep(icmp_interval=None), "spec.icmp_interval"),
    ("SweepService/CreateSweep", sweep(tcp_interval=seconds(600)), "spec.ports"),
    ("SweepService/CreateSweep", sweep(timeout=seconds(120)), "spec.timeout"),
    ("SourceService/CreateSource", source(kind=0), "spec.kind"),
    ("SourceService/CreateSource", source(endpoint="netbox.example"), "spec.endpoint"),
    ("SourceService/CreateSource", source(sync_interval=seconds(1)), "spec.sync_interval"),
    ("SourceService/CreateSource", source({"api key": "x"}), "credentials"),
    ("SourceService/CreateSource", source({"api_key": ""}), "credentials"),
    (
        "CheckService/UpdateCheck",
        check_pb.UpdateCheckRequest(name="taken", update_mask=FieldMask(paths=["colour"])),
        "update_mask.paths[0]",
    ),
    (
        "CheckService/UpdateCheck",
        check_pb.UpdateCheckRequest(
            name="taken", spec=check_pb.CheckSpec(port=80), update_mask=FieldMask(paths=["port"])
        ),
        "spec.port",
    ),
    ("CheckService/ListChecks", check_pb.ListChecksRequest(page_size=5000), "page_size"),
    ("CheckService/ListChecks", check_pb.ListChecksRequest(state=cast(Any, 42)), "state"),
]


@pytest.mark.parametrize(("method", "request_message", "field"), CASES, ids=[f"{m}:{f}" for m, _, f in CASES])
async def test_bad_input_names_the_field(
    shared: World, method: str, request_message: Message, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await invoke(shared.operator.channel, S + method, request_message)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(field), error.details()
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(raw).details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field.startswith(field.split("[", maxsplit=1)[0])


async def test_unknown_partition_and_taken_name(shared: World) -> None:
    for request, code in (
        (check(partition="dc9"), grpc.StatusCode.NOT_FOUND),
        (check(name="taken"), grpc.StatusCode.ALREADY_EXISTS),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await shared.operator.checks.CreateCheck(request)
        assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await shared.operator.checks.GetCheck(check_pb.GetCheckRequest(name="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
