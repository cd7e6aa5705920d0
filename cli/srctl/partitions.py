"""`srctl partitions`: the network segments of a tenant and their CIDR ranges."""

from __future__ import annotations

import argparse

from serviceradar.admin.v1 import partition_service_pb2 as pb
from serviceradar.admin.v1 import partition_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages
from srctl.listing import add_list_flags
from srctl.output import Column, key_values, table

LIST_COLUMNS: list[Column[pb.Partition]] = [
    Column("TENANT", "tenant"),
    Column("PARTITION", "name"),
    Column("CIDRS", "cidrs"),
    Column("DESCRIPTION", "description"),
    Column("CREATED", "created_at"),
]

DETAIL_COLUMNS: list[Column[pb.Partition]] = [
    Column("Tenant", "tenant"),
    Column("Partition", "name"),
    Column("Description", "description"),
    Column("CIDRs", "cidrs"),
    Column("Created", "created_at"),
    Column("Updated", "updated_at"),
]


def _show_one(
    ctx: Context, response: pb.CreatePartitionResponse | pb.GetPartitionResponse | pb.UpdatePartitionResponse
) -> int:
    ctx.printer.show(response, lambda now: [key_values(response.partition, DETAIL_COLUMNS, now)])
    return 0


def _create(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.CreatePartitionRequest(
        tenant=args.tenant, name=args.name, description=args.description, cidrs=args.cidr
    )
    with ctx.connect() as client:
        response = client.call(pb_grpc.PartitionServiceStub(client.channel).CreatePartition, request)
    return _show_one(ctx, response)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListPartitionsRequest(
        tenant=args.tenant, page_size=args.page_size, page_token=args.page_token
    )
    with ctx.connect() as client:
        stub = pb_grpc.PartitionServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListPartitions, request, "partitions", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.partitions, LIST_COLUMNS, now)])
    return 0


def _get(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.PartitionServiceStub(client.channel)
        response = client.call(stub.GetPartition, pb.GetPartitionRequest(tenant=args.tenant, name=args.name))
    return _show_one(ctx, response)


def _update(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.UpdatePartitionRequest(
        tenant=args.tenant, name=args.name, description=args.description, cidrs=args.cidr
    )
    with ctx.connect() as client:
        response = client.call(pb_grpc.PartitionServiceStub(client.channel).UpdatePartition, request)
    return _show_one(ctx, response)


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.PartitionServiceStub(client.channel)
        response = client.call(
            stub.DeletePartition, pb.DeletePartitionRequest(tenant=args.tenant, name=args.name)
        )
    ctx.printer.show(response, lambda now: [f"partition {args.name} deleted"])
    return 0


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `partitions` and its verbs."""
    noun = nouns.add_parser(
        "partitions",
        aliases=["partition"],
        help="network segments (CIDR ranges) of a tenant",
        description=(
            "Partitions are a tenant's network segments. IP space may overlap between\n"
            "partitions, so every IP lookup is made within one partition."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    def tenant_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--tenant", default="", help="tenant (default: yours; 'default' for a platform admin)"
        )

    create = add_verb(
        verbs,
        "create",
        summary="create a partition",
        description="Create a partition with its CIDR ranges (host bits zero: 10.0.0.0/8).",
        examples="  srctl partitions create dc1 --cidr 10.0.0.0/8 --cidr 2001:db8::/32 --description 'north'",
        handler=_create,
        common=common,
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--cidr", action="append", default=[], metavar="CIDR", help="a range; repeat for more"
    )
    create.add_argument("--description", default="")
    tenant_flag(create)

    listing = add_verb(
        verbs,
        "list",
        summary="list partitions",
        description="List partitions by tenant and name.",
        examples="  srctl partitions list\n  srctl partitions list --tenant acme -o yaml",
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    add_list_flags(listing, "partitions")

    get = add_verb(
        verbs,
        "get",
        summary="show one partition",
        description="Show one partition and its CIDR ranges.",
        examples="  srctl partitions get dc1",
        handler=_get,
        common=common,
    )
    get.add_argument("name", metavar="NAME")
    tenant_flag(get)

    update = add_verb(
        verbs,
        "update",
        summary="replace a partition's CIDR ranges and description",
        description="Replace the CIDR ranges and the description of a partition.",
        examples="  srctl partitions update dc1 --cidr 10.0.0.0/8 --cidr 172.16.0.0/12",
        handler=_update,
        common=common,
    )
    update.add_argument("name", metavar="NAME")
    update.add_argument(
        "--cidr", action="append", default=[], metavar="CIDR", help="a range; repeat for more"
    )
    update.add_argument("--description", default="")
    tenant_flag(update)

    delete = add_verb(
        verbs,
        "delete",
        summary="delete a partition no poller belongs to (admin)",
        description="Delete a partition; refused while pollers belong to it.",
        examples="  srctl partitions delete dc1",
        handler=_delete,
        common=common,
    )
    delete.add_argument("name", metavar="NAME")
    tenant_flag(delete)
