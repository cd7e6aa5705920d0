"""API tokens end to end: shown once, stored as hashes, expiry, revocation, last use, audit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from serviceradar.admin.v1 import partition_service_pb2 as partition_pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as partition_grpc
from serviceradar.admin.v1 import tenant_service_pb2 as tenant_pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as tenant_grpc
from serviceradar.admin.v1 import token_service_pb2 as pb
from serviceradar.admin.v1 import token_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as edge_grpc
from srcore.security.rbac import Role
from tests.tenancy.support import Site

LIST_PARTITIONS = "/serviceradar.admin.v1.PartitionService/ListPartitions"


async def list_partitions(site: Site, token: str | None) -> partition_pb.ListPartitionsResponse:
    async with site.admin_port(token) as channel:
        return await partition_grpc.PartitionServiceStub(channel).ListPartitions(
            partition_pb.ListPartitionsRequest()
        )


async def refused(site: Site, token: str | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_partitions(site, token)
    return caught.value


async def test_secret_is_shown_once_and_only_its_hash_is_stored(site: Site) -> None:
    await site.create_tenant("acme")
    created = await site.create_token("acme", Role.OPERATOR)
    secret = created.secret
    assert secret.startswith(f"srt_{created.token.token_id}_")
    assert created.token.role == pb.ROLE_OPERATOR

    async with site.platform() as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        shown = await stub.GetToken(pb.GetTokenRequest(token_id=created.token.token_id))
        listed = await stub.ListTokens(pb.ListTokensRequest(tenant="acme"))
    assert secret not in str(shown) and secret not in str(listed)
    assert [t.token_id for t in listed.tokens] == [created.token.token_id]

    await list_partitions(site, secret)  # the token works

    rows = await site.rows("api_tokens")
    assert [row["digest"] for row in rows] == [hashlib.sha256(secret.encode()).hexdigest()]
    # No column of any table holds the secret or its random part (audit rows included).
    # (Its body is URL-safe base64, which may itself hold "_": cut the known prefix off.)
    random_part = secret.removeprefix(f"srt_{created.token.token_id}_")
    for table in ("api_tokens", "audit_events", "state_transitions", "onboarding_packages", "tenants"):
        for row in await site.rows(table):
            assert not any(random_part in str(value) for value in row.values()), table


async def test_last_use_is_recorded_in_batches(site: Site) -> None:
    await site.create_tenant("acme")
    created = await site.create_token("acme", Role.VIEWER)
    for _ in range(3):
        await list_partitions(site, created.secret)
    # Not written per call...
    assert [row["last_used_at"] for row in await site.rows("api_tokens")] == [None]
    await site.app.access.flush_last_used()
    async with site.platform() as channel:
        token = (
            await pb_grpc.TokenServiceStub(channel).GetToken(
                pb.GetTokenRequest(token_id=created.token.token_id)
            )
        ).token
    assert token.HasField("last_used_at")
    assert abs(token.last_used_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_missing_malformed_expired_and_revoked_tokens_are_unauthenticated_and_audited(
    site: Site,
) -> None:
    await site.create_tenant("acme")
    missing = await refused(site, None)
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED

    garbage = "srt_not-a-token-at-all-but-a-secret-pasted-in-the-wrong-place"
    malformed = await refused(site, garbage)
    assert malformed.code() == grpc.StatusCode.UNAUTHENTICATED
    assert garbage not in (malformed.details() or "")

    expiring = await site.create_token("acme", Role.VIEWER)
    # Arrange an expiry in the past before the token is first used (so no cache holds it).
    await site.execute(
        "UPDATE api_tokens SET expires_at = :at WHERE token_id = :id",
        at=datetime.now(UTC) - timedelta(seconds=1),
        id=expiring.token.token_id,
    )
    expired = await refused(site, expiring.secret)
    assert expired.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (expired.details() or "")

    revoking = await site.create_token("acme", Role.ADMIN)
    await list_partitions(site, revoking.secret)  # cached as valid on this replica
    async with site.admin_port(revoking.secret) as channel:
        revoked_answer = await pb_grpc.TokenServiceStub(channel).RevokeToken(
            pb.RevokeTokenRequest(token_id=revoking.token.token_id)
        )
    assert revoked_answer.token.HasField("revoked_at")
    revoked = await refused(site, revoking.secret)
    assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (revoked.details() or "")

    denials = [e for e in await site.audit(outcome="UNAUTHENTICATED") if e.method == LIST_PARTITIONS]
    actors = [e.actor for e in denials]
    assert actors.count("anonymous") == 2  # no token, and a token that is not one
    assert f"token:{expiring.token.token_id}" in actors
    assert f"token:{revoking.token.token_id}" in actors
    for event in await site.audit():
        assert garbage not in str(event) and revoking.secret not in str(event)


async def test_wrong_role_is_permission_denied_and_audited(site: Site) -> None:
    await site.create_tenant("acme")
    viewer = await site.create_token("acme", Role.VIEWER)
    async with site.admin_port(viewer.secret) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await partition_grpc.PartitionServiceStub(channel).CreatePartition(
                partition_pb.CreatePartitionRequest(name="dc1", cidrs=["10.0.0.0/8"])
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    [event] = await site.audit(outcome="PERMISSION_DENIED")
    assert event.actor == f"token:{viewer.token.token_id}"
    assert event.tenant == "acme"
    assert event.method.endswith("PartitionService/CreatePartition")
    assert event.target == "name=dc1"
    assert event.peer


async def test_nobody_grants_more_than_they_hold(site: Site) -> None:
    await site.create_tenant("acme")
    admin = await site.create_token("acme", Role.ADMIN)
    async with site.admin_port(admin.secret) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateToken(pb.CreateTokenRequest(role=pb.ROLE_PLATFORM_ADMIN))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        viewer = await stub.CreateToken(pb.CreateTokenRequest(role=pb.ROLE_VIEWER))
        assert viewer.token.tenant == "acme"  # a tenant admin's tokens stay in its tenant
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateToken(pb.CreateTokenRequest(role=pb.ROLE_UNSPECIFIED))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_platform_token_works_without_a_certificate(site: Site) -> None:
    platform = await site.create_token("", Role.PLATFORM_ADMIN)
    assert platform.token.tenant == ""
    async with site.admin_port(platform.secret) as channel:
        created = await tenant_grpc.TenantServiceStub(channel).CreateTenant(
            tenant_pb.CreateTenantRequest(name="acme")
        )
    assert created.tenant.name == "acme"
    [event] = [e for e in await site.audit() if e.method.endswith("CreateTenant") and e.tenant == "acme"]
    assert event.actor == f"token:{platform.token.token_id}"


async def test_a_token_wins_over_the_connection_certificate(sqlite_site: Site) -> None:
    site = sqlite_site
    await site.create_tenant("acme")
    viewer = await site.create_token("acme", Role.VIEWER)
    # The platform-admin certificate opens the connection; the viewer token is who calls.
    async with site.platform() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tenant_grpc.TenantServiceStub(channel).CreateTenant(
                tenant_pb.CreateTenantRequest(name="other"),
                metadata=(("authorization", f"Bearer {viewer.secret}"),),
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_edge_rpcs_are_refused_on_the_token_port(sqlite_site: Site) -> None:
    site = sqlite_site
    platform = await site.create_token("", Role.PLATFORM_ADMIN)
    async with site.admin_port(platform.secret) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await edge_grpc.EdgeServiceStub(channel).RegisterPoller(
                edge_pb.RegisterPollerRequest(poller_id="demo", partition="dc1")
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
