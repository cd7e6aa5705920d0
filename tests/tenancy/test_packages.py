"""Onboarding packages end to end: issue, download once, activate, revoke, expire, delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from serviceradar.admin.v1 import package_service_pb2 as pb
from serviceradar.admin.v1 import package_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as edge_grpc
from srcore.app import CoreApp
from srcore.domain.coordination import LeaderInfo
from srcore.domain.errors import InvalidArgument
from srcore.domain.leadership import Fenced
from srcore.security import pki
from srcore.security.identity import identity_from_pem
from srcore.security.pki import IssuedCertificate
from srcore.security.rbac import Role
from srcore.settings import Settings
from tests.tenancy.support import Site, register_request

PACKAGE = "/serviceradar.admin.v1.PackageService/"


async def issue(site: Site, tenant: str = "acme", poller_id: str = "p1") -> pb.IssuePackageResponse:
    async with site.platform() as channel:
        return await pb_grpc.PackageServiceStub(channel).IssuePackage(
            pb.IssuePackageRequest(tenant=tenant, partition="dc1", poller_id=poller_id)
        )


async def download(site: Site, issued: pb.IssuePackageResponse) -> pb.DownloadPackageResponse:
    # No client certificate: an installer has only the download token.
    async with site.admin_port(issued.download_token) as channel:
        return await pb_grpc.PackageServiceStub(channel).DownloadPackage(
            pb.DownloadPackageRequest(package_id=issued.package.package_id)
        )


async def get(site: Site, package_id: str) -> pb.Package:
    async with site.platform() as channel:
        answer = await pb_grpc.PackageServiceStub(channel).GetPackage(
            pb.GetPackageRequest(package_id=package_id)
        )
    return answer.package


async def change(site: Site, verb: str, package_id: str) -> pb.Package:
    async with site.platform() as channel:
        stub = pb_grpc.PackageServiceStub(channel)
        if verb == "revoke":
            return (
                await stub.RevokePackage(pb.RevokePackageRequest(package_id=package_id, reason="lost"))
            ).package
        return (await stub.DeletePackage(pb.DeletePackageRequest(package_id=package_id))).package


def as_issued(bundle: pb.PackageBundle) -> IssuedCertificate:
    cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    return IssuedCertificate(
        bundle.cert_pem.encode(), bundle.key_pem.encode(), cert.serial_number, cert.not_valid_after_utc
    )


async def onboard(site: Site, poller_id: str = "p1") -> tuple[pb.IssuePackageResponse, IssuedCertificate]:
    issued = await issue(site, poller_id=poller_id)
    bundle = (await download(site, issued)).bundle
    return issued, as_issued(bundle)


async def edge_code(site: Site, cert: IssuedCertificate, poller_id: str = "p1") -> grpc.StatusCode:
    async with site.edge(cert) as edge:
        try:
            await edge.RegisterPoller(register_request(poller_id))
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_issue_download_once_and_activate(site: Site) -> None:
    await site.create_tenant("acme")
    issued = await issue(site)
    assert issued.package.state == pb.PACKAGE_STATE_ISSUED
    assert issued.download_token.startswith("srd_")
    assert issued.package.spiffe_id == "spiffe://serviceradar/tenant/acme/poller/p1"

    [row] = await site.rows("onboarding_packages")
    assert row["sealed_key"] is not None and b"PRIVATE KEY" not in bytes(row["sealed_key"])
    assert row["download_digest"] != issued.download_token

    answer = await download(site, issued)
    bundle = answer.bundle
    assert answer.package.state == pb.PACKAGE_STATE_DELIVERED
    assert (bundle.tenant, bundle.partition, bundle.poller_id) == ("acme", "dc1", "p1")
    assert bundle.core_address == site.core.address
    cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    key = serialization.load_pem_private_key(bundle.key_pem.encode(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(bundle.ca_pem.encode()))
    identity = identity_from_pem(bundle.cert_pem.encode(), "serviceradar")
    assert (identity.tenant, identity.poller_id) == ("acme", "p1")
    assert f"{identity.serial:x}" == answer.package.cert_serial

    # The key left the server with the bundle, and the token is spent.
    [row] = await site.rows("onboarding_packages")
    assert row["sealed_key"] is None and row["download_digest"] is None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await download(site, issued)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # The bundle is all a poller needs: mutual TLS with its CA, certificate and key.
    credentials = grpc.ssl_channel_credentials(
        bundle.ca_pem.encode(), bundle.key_pem.encode(), bundle.cert_pem.encode()
    )
    async with grpc.aio.secure_channel(bundle.core_address, credentials) as channel:
        session = await edge_grpc.EdgeServiceStub(channel).RegisterPoller(
            register_request("p1", bundle.partition)
        )
    assert session.tenant == "acme"
    package = await get(site, issued.package.package_id)
    assert package.state == pb.PACKAGE_STATE_ACTIVATED
    assert package.HasField("activated_at")
    [activation] = [e for e in await site.audit() if e.method.endswith("RegisterPoller")]
    assert activation.actor == "cert:spiffe://serviceradar/tenant/acme/poller/p1"
    assert activation.target == f"package_id={package.package_id}"
    states = [
        (r["from_state"], r["to_state"])
        for r in await site.rows("state_transitions")
        if r["entity_type"] == "package"
    ]
    assert states == [("issued", "delivered"), ("delivered", "activated")]


async def test_concurrent_downloads_hand_the_key_out_once(pg_site: Site) -> None:
    site = pg_site
    await site.create_tenant("acme")
    issued = await issue(site)
    outcomes = await asyncio.gather(*(download(site, issued) for _ in range(8)), return_exceptions=True)
    delivered = [o for o in outcomes if isinstance(o, pb.DownloadPackageResponse)]
    assert len(delivered) == 1
    assert all(
        isinstance(o, grpc.aio.AioRpcError)
        and o.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION)
        for o in outcomes
        if o not in delivered
    )


async def test_revoked_package_certificate_is_refused_on_every_edge_rpc_and_audited(site: Site) -> None:
    await site.create_tenant("acme")
    issued, cert = await onboard(site)
    async with site.edge(cert) as edge:
        session = await edge.RegisterPoller(register_request("p1"))
        await edge.ReportHealth(edge_pb.ReportHealthRequest(session_id=session.session_id, poller_id="p1"))
        revoked = await change(site, "revoke", issued.package.package_id)
        assert revoked.state == pb.PACKAGE_STATE_REVOKED and revoked.revoke_reason == "lost"
        # The very connection that was fine a moment ago: every edge RPC is checked.
        for call in (
            edge.RegisterPoller(register_request("p1")),
            edge.ReportHealth(edge_pb.ReportHealthRequest(session_id=session.session_id, poller_id="p1")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "revoked" in (caught.value.details() or "")
        sync = edge.SyncConfig(edge_pb.SyncConfigRequest(poller_id="p1"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sync.read()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refusals = [e for e in await site.audit(outcome="UNAUTHENTICATED") if "EdgeService" in e.method]
    assert len(refusals) == 3
    assert {e.actor for e in refusals} == {"cert:spiffe://serviceradar/tenant/acme/poller/p1"}
    assert {e.tenant for e in refusals} == {"acme"}


async def test_expired_package_cannot_be_activated(site: Site) -> None:
    await site.create_tenant("acme")
    issued, cert = await onboard(site)
    await site.execute(
        "UPDATE onboarding_packages SET expires_at = :at WHERE package_id = :id",
        at=datetime.now(UTC) - timedelta(seconds=1),
        id=issued.package.package_id,
    )
    # Past its TTL the certificate is refused even before the leader's sweep has run.
    assert await edge_code(site, cert) == grpc.StatusCode.UNAUTHENTICATED
    expired = await site.app.access.expire_packages(LeaderInfo("test-leader", 7, "test"))
    assert [p.package_id for p in expired] == [issued.package.package_id]
    assert (await get(site, issued.package.package_id)).state == pb.PACKAGE_STATE_EXPIRED
    assert await edge_code(site, cert) == grpc.StatusCode.UNAUTHENTICATED
    assert (await get(site, issued.package.package_id)).state == pb.PACKAGE_STATE_EXPIRED
    [row] = [r for r in await site.rows("state_transitions") if r["to_state"] == "expired"]
    assert row["fencing_token"] == 7
    # A deposed leader waking up late is refused by the fence.
    with pytest.raises(Fenced):
        await site.app.access.expire_packages(LeaderInfo("deposed", 6, "test"))


async def test_illegal_transitions_are_failed_precondition(site: Site) -> None:
    await site.create_tenant("acme")
    issued, cert = await onboard(site)
    assert await edge_code(site, cert) == grpc.StatusCode.OK
    package_id = issued.package.package_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await change(site, "delete", package_id)  # activated: revoke first
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await change(site, "revoke", package_id)).state == pb.PACKAGE_STATE_REVOKED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await change(site, "revoke", package_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    deleted = await change(site, "delete", package_id)
    assert deleted.state == pb.PACKAGE_STATE_DELETED
    # A deleted package's certificate stays refused: the row is the revocation list.
    assert await edge_code(site, cert) == grpc.StatusCode.UNAUTHENTICATED
    async with site.platform() as channel:
        listed = await pb_grpc.PackageServiceStub(channel).ListPackages(pb.ListPackagesRequest())
        assert listed.packages == []
        listed = await pb_grpc.PackageServiceStub(channel).ListPackages(
            pb.ListPackagesRequest(state=pb.PACKAGE_STATE_DELETED)
        )
        assert [p.package_id for p in listed.packages] == [package_id]


async def test_revoked_before_download_cannot_be_downloaded(sqlite_site: Site) -> None:
    site = sqlite_site
    await site.create_tenant("acme")
    issued = await issue(site)
    await change(site, "revoke", issued.package.package_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await download(site, issued)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [row] = await site.rows("onboarding_packages")
    assert row["sealed_key"] is None


async def test_a_download_token_opens_its_own_package_only(sqlite_site: Site) -> None:
    site = sqlite_site
    await site.create_tenant("acme")
    first, second = await issue(site, poller_id="p1"), await issue(site, poller_id="p2")
    async with site.admin_port(first.download_token) as channel:
        stub = pb_grpc.PackageServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DownloadPackage(pb.DownloadPackageRequest(package_id=second.package.package_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListPackages(pb.ListPackagesRequest())
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_operators_issue_and_revoke_admins_delete(sqlite_site: Site) -> None:
    site = sqlite_site
    await site.create_tenant("acme")
    operator = await site.create_token("acme", Role.OPERATOR)
    async with site.admin_port(operator.secret) as channel:
        stub = pb_grpc.PackageServiceStub(channel)
        issued = await stub.IssuePackage(pb.IssuePackageRequest(partition="dc1", poller_id="p9"))
        assert issued.package.tenant == "acme"
        assert issued.package.created_by == f"token:{operator.token.token_id}"
        await stub.RevokePackage(pb.RevokePackageRequest(package_id=issued.package.package_id))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.DeletePackage(pb.DeletePackageRequest(package_id=issued.package.package_id))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_operator_provided_signing_ca(tmp_path: Path) -> None:
    """Production: a dedicated edge-onboarding CA signs packages; the server trusts it."""
    root = pki.load_or_create_ca(tmp_path / "root", "root CA")
    edge_ca = pki.load_or_create_ca(tmp_path / "edge", "edge onboarding CA")
    tls = tmp_path / "tls"
    tls.mkdir()
    pki.write_pem_pair(
        tls / "server.pem", tls / "server-key.pem", pki.issue_server_certificate(root, ["127.0.0.1"])
    )
    (tls / "clients.pem").write_bytes(root.cert_pem + edge_ca.cert_pem)
    settings = Settings(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        metrics_listen="",
        tls_cert=str(tls / "server.pem"),
        tls_key=str(tls / "server-key.pem"),
        tls_client_ca=str(tls / "clients.pem"),
        package_ca_cert=str(tmp_path / "edge" / "ca.pem"),
        package_ca_key=str(tmp_path / "edge" / "ca-key.pem"),
        package_server_ca=str(tmp_path / "root" / "ca.pem"),
    ).validate()
    app = CoreApp(settings)
    await app.start()
    try:
        boss = pki.issue_operator_certificate(root, "serviceradar", "boss", "platform-admin", None)
        creds = grpc.ssl_channel_credentials(root.cert_pem, boss.key_pem, boss.cert_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", creds) as channel:
            issued = await pb_grpc.PackageServiceStub(channel).IssuePackage(
                pb.IssuePackageRequest(partition="dc1", poller_id="p1")
            )
        token_creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root.cert_pem),
            grpc.access_token_call_credentials(issued.download_token),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{app.admin_port}", token_creds) as channel:
            bundle = (
                await pb_grpc.PackageServiceStub(channel).DownloadPackage(
                    pb.DownloadPackageRequest(package_id=issued.package.package_id)
                )
            ).bundle
        assert bundle.ca_pem.encode() == root.cert_pem
        cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
        cert.verify_directly_issued_by(edge_ca.cert)
        edge_creds = grpc.ssl_channel_credentials(
            bundle.ca_pem.encode(), bundle.key_pem.encode(), bundle.cert_pem.encode()
        )
        async with grpc.aio.secure_channel(bundle.core_address, edge_creds) as channel:
            session = await edge_grpc.EdgeServiceStub(channel).RegisterPoller(register_request("p1"))
        assert session.tenant == "default"
    finally:
        await app.stop()


async def test_a_signing_ca_the_server_does_not_trust_is_refused_at_start(tmp_path: Path) -> None:
    root = pki.load_or_create_ca(tmp_path / "root", "root CA")
    pki.load_or_create_ca(tmp_path / "edge", "edge onboarding CA")
    tls = tmp_path / "tls"
    tls.mkdir()
    pki.write_pem_pair(
        tls / "server.pem", tls / "server-key.pem", pki.issue_server_certificate(root, ["127.0.0.1"])
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        metrics_listen="",
        tls_cert=str(tls / "server.pem"),
        tls_key=str(tls / "server-key.pem"),
        tls_client_ca=str(tmp_path / "root" / "ca.pem"),
        package_ca_cert=str(tmp_path / "edge" / "ca.pem"),
        package_ca_key=str(tmp_path / "edge" / "ca-key.pem"),
    ).validate()
    app = CoreApp(settings)
    try:
        with pytest.raises(InvalidArgument, match="tls_client_ca"):
            await app.start()
    finally:
        await app.stop()
