"""PartitionService: the network segments of a tenant and their CIDR ranges."""

from __future__ import annotations

from serviceradar.admin.v1 import partition_service_pb2 as pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as pb_grpc
from srcore.api import paging
from srcore.api.access import Access
from srcore.api.context import Context
from srcore.api.convert import timestamp
from srcore.domain import validation
from srcore.domain.errors import NotFound
from srcore.domain.tenancy import Partition, cidrs
from srcore.security.principal import caller


def partition_message(partition: Partition) -> pb.Partition:
    """The admin view of a partition."""
    return pb.Partition(
        tenant=partition.tenant,
        name=partition.name,
        description=partition.description,
        cidrs=list(partition.cidrs),
        created_at=timestamp(partition.created_at),
        updated_at=timestamp(partition.updated_at),
    )


class PartitionServicer(pb_grpc.PartitionServiceServicer):
    """Partitions of the caller's tenant (of any tenant for a platform admin)."""

    def __init__(self, access: Access) -> None:
        self._access = access

    async def CreatePartition(
        self, request: pb.CreatePartitionRequest, context: Context
    ) -> pb.CreatePartitionResponse:
        """Create a partition; its ranges may overlap other partitions'."""
        tenant = caller().tenant_for(request.tenant)
        partition = Partition(
            tenant=tenant,
            name=validation.slug("name", request.name),
            description=validation.text("description", request.description, 255),
            cidrs=cidrs("cidrs", list(request.cidrs)),
            created_at=self._access.clock(),
        )
        created = await self._access.tenants.create_partition(partition)
        return pb.CreatePartitionResponse(partition=partition_message(created))

    async def ListPartitions(
        self, request: pb.ListPartitionsRequest, context: Context
    ) -> pb.ListPartitionsResponse:
        """One page of partitions, by tenant and name."""
        tenant = caller().scope(request.tenant, all_tenants=True)
        size = paging.page_size(request.page_size)
        after = paging.text_key(request.page_token, 2)
        found = await self._access.tenants.list_partitions(
            tenant, size + 1, (after[0], after[1]) if after else None
        )
        page = found[:size]
        return pb.ListPartitionsResponse(
            partitions=[partition_message(p) for p in page],
            next_page_token=paging.encode_token([page[-1].tenant, page[-1].name])
            if len(found) > size
            else "",
        )

    async def GetPartition(
        self, request: pb.GetPartitionRequest, context: Context
    ) -> pb.GetPartitionResponse:
        """One partition; NOT_FOUND for one the caller cannot see."""
        tenant = caller().tenant_for(request.tenant)
        name = validation.slug("name", request.name)
        partition = await self._access.tenants.get_partition(tenant, name)
        if partition is None:
            raise NotFound(f"partition {name!r} not found")
        return pb.GetPartitionResponse(partition=partition_message(partition))

    async def UpdatePartition(
        self, request: pb.UpdatePartitionRequest, context: Context
    ) -> pb.UpdatePartitionResponse:
        """Replace a partition's description and CIDR ranges."""
        tenant = caller().tenant_for(request.tenant)
        partition = await self._access.tenants.update_partition(
            tenant,
            validation.slug("name", request.name),
            validation.text("description", request.description, 255),
            cidrs("cidrs", list(request.cidrs)),
            self._access.clock(),
        )
        return pb.UpdatePartitionResponse(partition=partition_message(partition))

    async def DeletePartition(
        self, request: pb.DeletePartitionRequest, context: Context
    ) -> pb.DeletePartitionResponse:
        """Delete a partition no poller belongs to."""
        tenant = caller().tenant_for(request.tenant)
        await self._access.tenants.delete_partition(tenant, validation.slug("name", request.name))
        return pb.DeletePartitionResponse()
