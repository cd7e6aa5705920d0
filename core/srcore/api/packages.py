"""PackageService: onboarding packages for pollers, downloadable once."""

from __future__ import annotations

import uuid

from serviceradar.admin.v1 import package_service_pb2 as pb
from serviceradar.admin.v1 import package_service_pb2_grpc as pb_grpc
from srcore.api import paging
from srcore.api.access import Access
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from srcore.domain.packages import Package, PackageState, package_ttl, serial_hex
from srcore.security import tokens
from srcore.security.crypto import DecryptionError
from srcore.security.identity import edge_spiffe_id
from srcore.security.principal import PrincipalKind, caller, note
from srcore.store.packages import NewPackage

PACKAGE_STATES = {state: getattr(pb, f"PACKAGE_STATE_{state.name}") for state in PackageState}
_STATE_FROM_PB = {value: state for state, value in PACKAGE_STATES.items()}


def package_message(package: Package) -> pb.Package:
    """The admin view of a package; it never holds the key."""
    return pb.Package(
        package_id=package.package_id,
        tenant=package.tenant,
        partition=package.partition,
        poller_id=package.poller_id,
        state=PACKAGE_STATES[package.state],
        spiffe_id=package.spiffe_id,
        cert_serial=package.cert_serial,
        cert_not_after=timestamp(package.cert_not_after),
        created_by=package.created_by,
        created_at=timestamp(package.created_at),
        expires_at=timestamp(package.expires_at),
        delivered_at=timestamp(package.delivered_at),
        activated_at=timestamp(package.activated_at),
        revoked_at=timestamp(package.revoked_at),
        revoke_reason=package.revoke_reason,
        updated_at=timestamp(package.updated_at),
    )


def _aad(package_id: str) -> bytes:
    # Binds a sealed key to its package row: copied to another row, it does not decrypt.
    return f"package:{package_id}".encode()


def _package_id(value: str) -> str:
    if len(value) != 32 or not all(c in "0123456789abcdef" for c in value):
        raise InvalidArgument("package_id", "must be the 32-character id IssuePackage returned")
    return value


class PackageServicer(pb_grpc.PackageServiceServicer):
    """Onboarding packages of the caller's tenant (of any tenant for a platform admin)."""

    def __init__(self, access: Access) -> None:
        self._access = access

    async def _visible(self, package_id: str) -> Package:
        principal = caller()
        package = await self._access.packages.get(_package_id(package_id))
        if package is None or not principal.sees(package.tenant):
            raise NotFound(f"package {package_id!r} not found")
        return package

    async def IssuePackage(
        self, request: pb.IssuePackageRequest, context: Context
    ) -> pb.IssuePackageResponse:
        """Make the key pair and certificate, seal the key, and return the download token once."""
        principal = caller()
        tenant = principal.tenant_for(request.tenant)
        partition = validation.slug("partition", request.partition)
        poller_id = validation.identifier("poller_id", request.poller_id)
        ttl = package_ttl(
            request.ttl.ToTimedelta().total_seconds() if request.HasField("ttl") else None,
            self._access.package_ttl,
        )
        signer = self._access.signer
        now = self._access.clock()
        issued = signer.issue(tenant, poller_id, now)
        package_id = uuid.uuid4().hex
        download = tokens.generate(tokens.TokenKind.DOWNLOAD)
        package = Package(
            package_id=package_id,
            tenant=tenant,
            partition=partition,
            poller_id=poller_id,
            state=PackageState.ISSUED,
            spiffe_id=edge_spiffe_id(signer.trust_domain, tenant, poller_id),
            cert_serial=serial_hex(issued.serial),
            cert_not_after=issued.not_after,
            created_by=principal.actor,
            created_at=now,
            expires_at=now + ttl,
            updated_at=now,
        )
        await self._access.packages.insert(
            NewPackage(
                package=package,
                cert_pem=issued.cert_pem,
                sealed_key=self._access.keyring.seal(issued.key_pem, _aad(package_id)),
                download_id=download.token_id,
                download_digest=download.digest,
            )
        )
        note(target=f"package_id={package_id} partition={partition} poller_id={poller_id}", tenant=tenant)
        return pb.IssuePackageResponse(package=package_message(package), download_token=download.secret)

    async def ListPackages(
        self, request: pb.ListPackagesRequest, context: Context
    ) -> pb.ListPackagesResponse:
        """One page of packages, newest first."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        partition = validation.slug("partition", request.partition) if request.partition else None
        state = None
        if request.state:
            state = _STATE_FROM_PB.get(request.state)
            if state is None:
                raise InvalidArgument("state", f"unknown package state {request.state}")
        size = paging.page_size(request.page_size)
        after = paging.text_key(request.page_token, 2)
        key = (paging.decode_time(after[0]), after[1]) if after else None
        found = await self._access.packages.list_packages(tenant, partition, state, size + 1, key)
        page = found[:size]
        more = len(found) > size
        return pb.ListPackagesResponse(
            packages=[package_message(p) for p in page],
            next_page_token=paging.encode_token([page[-1].created_at.isoformat(), page[-1].package_id])
            if more
            else "",
        )

    async def GetPackage(self, request: pb.GetPackageRequest, context: Context) -> pb.GetPackageResponse:
        """One package; NOT_FOUND for one the caller cannot see."""
        return pb.GetPackageResponse(package=package_message(await self._visible(request.package_id)))

    async def DownloadPackage(
        self, request: pb.DownloadPackageRequest, context: Context
    ) -> pb.DownloadPackageResponse:
        """Hand out the bundle once; the download token authorised this very package."""
        principal = caller()
        package_id = _package_id(request.package_id)
        if principal.kind is not PrincipalKind.DOWNLOAD or principal.credential_id != package_id:
            raise NotFound(f"package {package_id!r} not found")
        keyring = self._access.keyring

        def unseal(sealed: bytes) -> bytes:
            try:
                return keyring.open(sealed, _aad(package_id))
            except DecryptionError as exc:
                raise FailedPrecondition(f"the package's key cannot be decrypted: {exc}") from None

        delivery = await self._access.packages.deliver(package_id, self._access.clock(), unseal)
        package = delivery.package
        bundle = pb.PackageBundle(
            ca_pem=self._access.signer.server_ca_pem.decode(),
            cert_pem=delivery.cert_pem.decode(),
            key_pem=delivery.key_pem.decode(),
            core_address=self._access.core_address,
            tenant=package.tenant,
            partition=package.partition,
            poller_id=package.poller_id,
        )
        return pb.DownloadPackageResponse(package=package_message(package), bundle=bundle)

    async def RevokePackage(
        self, request: pb.RevokePackageRequest, context: Context
    ) -> pb.RevokePackageResponse:
        """Revoke a package: its certificate is refused on every edge call."""
        reason = validation.text("reason", request.reason, 255)
        package = await self._change(request.package_id, PackageState.REVOKED, reason)
        return pb.RevokePackageResponse(package=package_message(package))

    async def DeletePackage(
        self, request: pb.DeletePackageRequest, context: Context
    ) -> pb.DeletePackageResponse:
        """Delete a package that is not in use."""
        package = await self._change(request.package_id, PackageState.DELETED, "deleted")
        return pb.DeletePackageResponse(package=package_message(package))

    async def _change(self, package_id: str, target: PackageState, reason: str) -> Package:
        package = await self._visible(package_id)
        note(tenant=package.tenant)
        changed = await self._access.packages.change_state(
            package.package_id, target, reason, self._access.clock(), caller().tenant
        )
        self._access.edge_gate.forget(changed.cert_serial)
        return changed
