"""`srctl notifiers`: where a tenant's alerts are sent (JSON webhooks, Discord)."""

from __future__ import annotations

import argparse

from serviceradar.admin.v1 import notifier_service_pb2 as pb
from serviceradar.admin.v1 import notifier_service_pb2_grpc as pb_grpc
from srctl.alerts import DELIVERY_COLUMNS
from srctl.command import Context, add_verb, collect_pages
from srctl.errors import ExitCode
from srctl.listing import add_list_flags
from srctl.output import Column, enum_choices, key_values, parse_enum, table
from srctl.work import parse_pair

KINDS = enum_choices(pb.NotifierKind)

LIST_COLUMNS: list[Column[pb.Notifier]] = [
    Column("TENANT", "tenant"),
    Column("NOTIFIER", "name"),
    Column("KIND", "kind"),
    Column("ENDPOINT", "endpoint"),
    Column("ENABLED", "enabled"),
    Column("UPDATED", "updated_at"),
]

DETAIL_COLUMNS: list[Column[pb.Notifier]] = [
    Column("Tenant", "tenant"),
    Column("Notifier", "name"),
    Column("Kind", "kind"),
    Column("Endpoint", "endpoint"),
    Column("Headers", lambda n: ", ".join(n.header_names) or "<none>"),
    Column("Enabled", "enabled"),
    Column("Created", "created_at"),
    Column("Updated", "updated_at"),
]


def _show_one(
    ctx: Context,
    response: pb.CreateNotifierResponse | pb.GetNotifierResponse | pb.UpdateNotifierResponse,
) -> int:
    ctx.printer.show(response, lambda now: [key_values(response.notifier, DETAIL_COLUMNS, now)])
    return 0


def _create(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.CreateNotifierRequest(
        tenant=args.tenant,
        name=args.name,
        kind=parse_enum(pb.NotifierKind, args.kind),
        url=args.url,
        headers=dict(args.header or []),
        disabled=args.disabled,
    )
    with ctx.connect() as client:
        response = client.call(pb_grpc.NotifierServiceStub(client.channel).CreateNotifier, request)
    return _show_one(ctx, response)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListNotifiersRequest(
        tenant=args.tenant, page_size=args.page_size, page_token=args.page_token
    )
    with ctx.connect() as client:
        stub = pb_grpc.NotifierServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListNotifiers, request, "notifiers", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.notifiers, LIST_COLUMNS, now)])
    return 0


def _get(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.NotifierServiceStub(client.channel)
        response = client.call(stub.GetNotifier, pb.GetNotifierRequest(tenant=args.tenant, name=args.name))
    return _show_one(ctx, response)


def _update(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.UpdateNotifierRequest(
        tenant=args.tenant,
        name=args.name,
        kind=parse_enum(pb.NotifierKind, args.kind) if args.kind else pb.NOTIFIER_KIND_UNSPECIFIED,
        url=args.url or "",
        headers=dict(args.header or []),
        replace_headers=args.header is not None or args.clear_headers,
    )
    if args.enabled is not None:
        request.enabled = args.enabled
    with ctx.connect() as client:
        response = client.call(pb_grpc.NotifierServiceStub(client.channel).UpdateNotifier, request)
    return _show_one(ctx, response)


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.NotifierServiceStub(client.channel)
        response = client.call(
            stub.DeleteNotifier, pb.DeleteNotifierRequest(tenant=args.tenant, name=args.name)
        )
    ctx.printer.show(response, lambda now: [f"notifier {args.name} deleted"])
    return 0


def _test(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.NotifierServiceStub(client.channel)
        response = client.call(stub.TestNotifier, pb.TestNotifierRequest(tenant=args.tenant, name=args.name))
    verdict = "accepted" if response.success else "NOT accepted"
    ctx.printer.show(
        response,
        lambda now: [f"sample {verdict} by {args.name}", table(response.attempts, DELIVERY_COLUMNS, now)],
    )
    return ExitCode.OK if response.success else ExitCode.SERVER_ERROR


def _config_flags(parser: argparse.ArgumentParser, for_update: bool) -> None:
    parser.add_argument("--kind", choices=KINDS, required=not for_update, help="payload format")
    parser.add_argument(
        "--url", required=not for_update, help="http(s) URL to POST to; sealed at rest, never shown again"
    )
    parser.add_argument(
        "--header",
        metavar="NAME=VALUE",
        type=parse_pair,
        action="append",
        help="extra HTTP header, e.g. Authorization='Bearer ...' (repeatable; sealed; on update they "
        "replace all headers)",
    )


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `notifiers` and its verbs."""
    noun = nouns.add_parser(
        "notifiers",
        aliases=["notifier"],
        help="where alerts are sent: webhooks and Discord",
        description=(
            "Notifiers receive a tenant's alert notifications: a generic JSON webhook or a\n"
            "Discord channel webhook. URLs and headers are sealed at rest and never shown;\n"
            "reads show the endpoint's scheme and host only (docs/alerts.md)."
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
        summary="add a notifier",
        description="Add a notifier; alerts of the tenant are sent to it from then on.",
        examples=(
            "  srctl notifiers create ops-discord --kind discord --url https://discord.com/api/webhooks/ID/TOKEN\n"
            "  srctl notifiers create pager --kind webhook --url https://hooks.example/sr "
            "--header Authorization='Bearer s3cret'"
        ),
        handler=_create,
        common=common,
    )
    create.add_argument("name", metavar="NAME")
    _config_flags(create, for_update=False)
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    tenant_flag(create)

    listing = add_verb(
        verbs,
        "list",
        summary="list notifiers",
        description="List notifiers by tenant and name.",
        examples="  srctl notifiers list -o yaml",
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    add_list_flags(listing, "notifiers")

    get = add_verb(
        verbs,
        "get",
        summary="show one notifier",
        description="Show one notifier (never its URL or header values).",
        examples="  srctl notifiers get ops-discord",
        handler=_get,
        common=common,
    )
    get.add_argument("name", metavar="NAME")
    tenant_flag(get)

    update = add_verb(
        verbs,
        "update",
        summary="change a notifier",
        description="Change a notifier; flags not given keep their value.",
        examples=(
            "  srctl notifiers update pager --url https://hooks.example/v2\n"
            "  srctl notifiers update pager --disable"
        ),
        handler=_update,
        common=common,
    )
    update.add_argument("name", metavar="NAME")
    _config_flags(update, for_update=True)
    update.add_argument("--clear-headers", action="store_true", help="remove every extra header")
    update.add_argument(
        "--enable", dest="enabled", action="store_const", const=True, default=None, help="send again"
    )
    update.add_argument("--disable", dest="enabled", action="store_const", const=False, help="stop sending")
    tenant_flag(update)

    delete = add_verb(
        verbs,
        "delete",
        summary="delete a notifier (admin)",
        description="Delete a notifier; its past delivery records stay with their alerts.",
        examples="  srctl notifiers delete pager",
        handler=_delete,
        common=common,
    )
    delete.add_argument("name", metavar="NAME")
    tenant_flag(delete)

    test = add_verb(
        verbs,
        "test",
        summary="send a sample alert now",
        description="Send a sample alert to the notifier, with the usual retries, and show every attempt.\n"
        "Exits 1 when the receiver did not accept it.",
        examples="  srctl notifiers test ops-discord",
        handler=_test,
        common=common,
    )
    test.add_argument("name", metavar="NAME")
    tenant_flag(test)
