"""Bad input and wrong identities get clear statuses; bad TLS never gets a call through."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from serviceradar.admin.v1 import cluster_service_pb2 as cluster_pb
from serviceradar.admin.v1 import cluster_service_pb2_grpc as cluster_grpc
from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from srcore.security.pki import issue_edge_certificate, load_or_create_ca
from tests.api.test_edge_registration import register_request
from tests.helpers.core import RunningCore, running_core


async def call_register(
    core: RunningCore, request: pb.RegisterPollerRequest, credentials: grpc.ChannelCredentials
) -> grpc.StatusCode:
    """Register and return the status code (OK on success)."""
    async with core.channel(credentials) as channel:
        try:
            await pb_grpc.EdgeServiceStub(channel).RegisterPoller(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def expect_error(core: RunningCore, request: pb.RegisterPollerRequest) -> grpc.aio.AioRpcError:
    """Register with the demo edge certificate and return the error it must raise."""
    async with core.channel(core.creds.edge()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.EdgeServiceStub(channel).RegisterPoller(request, timeout=10)
    return error.value


async def test_certificate_for_one_poller_cannot_register_another(core: RunningCore) -> None:
    error = await expect_error(core, register_request(poller_id="other"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'demo'" in (error.details() or "") and "'other'" in (error.details() or "")


async def test_payload_naming_another_tenant_is_permission_denied(sqlite_core: RunningCore) -> None:
    error = await expect_error(sqlite_core, register_request(tenant="acme"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_heartbeat_for_another_poller_is_permission_denied(sqlite_core: RunningCore) -> None:
    async with sqlite_core.channel(sqlite_core.creds.edge()) as channel:
        edge = pb_grpc.EdgeServiceStub(channel)
        session = await edge.RegisterPoller(register_request())
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await edge.ReportHealth(pb.ReportHealthRequest(session_id=session.session_id, poller_id="other"))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"poller_id": "bad id!"}, "poller_id"),
        ({"poller_id": ""}, "poller_id"),
        ({"partition": "DC 1"}, "partition"),
        ({"partition": ""}, "partition"),
        ({"agents": [pb.AgentInfo(agent_id="ok"), pb.AgentInfo(agent_id="no/slash")]}, "agents[1].agent_id"),
        ({"capabilities": ["ICMP"]}, "capabilities[0]"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"version": "v" * 65}, "version"),
    ],
)
async def test_malformed_input_is_invalid_argument_naming_the_field(
    sqlite_core: RunningCore, request_fields: dict[str, object], field: str
) -> None:
    error = await expect_error(sqlite_core, register_request(**request_fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    # The field is also machine-readable in google.rpc.BadRequest details.
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field.startswith(field.split("[", maxsplit=1)[0])


async def test_oversized_message_is_resource_exhausted(tmp_path: Path) -> None:
    async with running_core(tmp_path / "data", max_message_bytes=64 * 1024) as core:
        error = await expect_error(core, register_request(hostname="h" * (128 * 1024)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_no_client_certificate_is_refused_at_the_handshake(sqlite_core: RunningCore) -> None:
    no_cert = grpc.ssl_channel_credentials(sqlite_core.creds.read("ca.pem"))
    assert await call_register(sqlite_core, register_request(), no_cert) == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_is_refused_at_the_handshake(
    sqlite_core: RunningCore, tmp_path: Path
) -> None:
    foreign_ca = load_or_create_ca(tmp_path / "foreign", "someone else's CA")
    forged = issue_edge_certificate(foreign_ca, "serviceradar", "default", "demo", timedelta(days=1))
    credentials = sqlite_core.creds.custom(forged.cert_pem, forged.key_pem)
    assert await call_register(sqlite_core, register_request(), credentials) == grpc.StatusCode.UNAVAILABLE


async def test_edge_certificate_cannot_use_the_admin_api(sqlite_core: RunningCore) -> None:
    async with sqlite_core.channel(sqlite_core.creds.edge()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await cluster_grpc.ClusterServiceStub(channel).GetClusterStatus(
                cluster_pb.GetClusterStatusRequest()
            )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_operator_certificate_cannot_act_as_an_edge(sqlite_core: RunningCore) -> None:
    code = await call_register(sqlite_core, register_request(), sqlite_core.creds.operator())
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_sync_config_for_another_poller_is_permission_denied(sqlite_core: RunningCore) -> None:
    async with sqlite_core.channel(sqlite_core.creds.edge()) as channel:
        edge = pb_grpc.EdgeServiceStub(channel)
        await edge.RegisterPoller(register_request())
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await edge.SyncConfig(pb.SyncConfigRequest(poller_id="other")).read()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
