"""`srctl tenants`: create, list, show, suspend and resume tenants."""

from __future__ import annotations

import argparse

from serviceradar.admin.v1 import tenant_service_pb2 as pb
from serviceradar.admin.v1 import tenant_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages
from srctl.listing import add_list_flags
from srctl.output import Column, key_values, table

LIST_COLUMNS: list[Column[pb.Tenant]] = [
    Column("TENANT", "name"),
    Column("DISPLAY-NAME", "display_name"),
    Column("STATE", "state"),
    Column("CREATED", "created_at"),
    Column("SUSPENDED", "suspended_at"),
    Column("REASON", "suspend_reason"),
]

DETAIL_COLUMNS: list[Column[pb.Tenant]] = [
    Column("Tenant", "name"),
    Column("Display name", "display_name"),
    Column("State", "state"),
    Column("Created", "created_at"),
    Column("Suspended", "suspended_at"),
    Column("Reason", "suspend_reason"),
]


def _show_one(
    ctx: Context,
    response: pb.CreateTenantResponse
    | pb.GetTenantResponse
    | pb.SuspendTenantResponse
    | pb.ResumeTenantResponse,
) -> int:
    ctx.printer.show(response, lambda now: [key_values(response.tenant, DETAIL_COLUMNS, now)])
    return 0


def _create(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.TenantServiceStub(client.channel)
        response = client.call(
            stub.CreateTenant, pb.CreateTenantRequest(name=args.name, display_name=args.display_name)
        )
    return _show_one(ctx, response)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListTenantsRequest(page_size=args.page_size, page_token=args.page_token)
    with ctx.connect() as client:
        stub = pb_grpc.TenantServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListTenants, request, "tenants", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.tenants, LIST_COLUMNS, now)])
    return 0


def _get(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.TenantServiceStub(client.channel)
        response = client.call(stub.GetTenant, pb.GetTenantRequest(name=args.name))
    return _show_one(ctx, response)


def _suspend(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.TenantServiceStub(client.channel)
        response = client.call(
            stub.SuspendTenant, pb.SuspendTenantRequest(name=args.name, reason=args.reason)
        )
    return _show_one(ctx, response)


def _resume(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.TenantServiceStub(client.channel)
        response = client.call(stub.ResumeTenant, pb.ResumeTenantRequest(name=args.name))
    return _show_one(ctx, response)


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `tenants` and its verbs."""
    noun = nouns.add_parser(
        "tenants",
        aliases=["tenant"],
        help="tenants (platform admins create and suspend them)",
        description="Create, list, show, suspend and resume tenants.",
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = add_verb(
        verbs,
        "create",
        summary="create a tenant (platform admin)",
        description="Create an active tenant. Names are 1-63 characters of [a-z0-9-].",
        examples='  srctl tenants create acme --display-name "Acme Corp"',
        handler=_create,
        common=common,
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--display-name", default="", help="name for people (default: NAME)")

    listing = add_verb(
        verbs,
        "list",
        summary="list the tenants you can see",
        description="List tenants by name: your own, or every tenant for a platform admin.",
        examples="  srctl tenants list\n  srctl tenants list -o json | jq -r '.tenants[].name'",
        handler=_list,
        common=common,
    )
    add_list_flags(listing, "tenants")

    get = add_verb(
        verbs,
        "get",
        summary="show one tenant",
        description="Show one tenant (default: your own).",
        examples="  srctl tenants get acme",
        handler=_get,
        common=common,
    )
    get.add_argument("name", metavar="NAME", nargs="?", default="")

    suspend = add_verb(
        verbs,
        "suspend",
        summary="suspend a tenant: its edges and tokens are refused",
        description=(
            "Suspend a tenant (platform admin). Its pollers' calls and its API tokens and\n"
            "operator certificates are refused until it is resumed; nothing is deleted."
        ),
        examples='  srctl tenants suspend acme --reason "contract ended"',
        handler=_suspend,
        common=common,
    )
    suspend.add_argument("name", metavar="NAME")
    suspend.add_argument("--reason", default="", help="why, for the audit log")

    resume = add_verb(
        verbs,
        "resume",
        summary="make a suspended tenant active again",
        description="Resume a suspended tenant (platform admin).",
        examples="  srctl tenants resume acme",
        handler=_resume,
        common=common,
    )
    resume.add_argument("name", metavar="NAME")
