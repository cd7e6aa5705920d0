"""`srctl tokens`: API tokens. The secret is printed once, at creation."""

from __future__ import annotations

import argparse

from rich.text import Text

from serviceradar.admin.v1 import token_service_pb2 as pb
from serviceradar.admin.v1 import token_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages
from srctl.listing import add_list_flags, duration
from srctl.output import Column, key_values, parse_enum, table

# Role names as certificates and the docs spell them.
ROLES = ["viewer", "operator", "admin", "platform-admin"]

LIST_COLUMNS: list[Column[pb.ApiToken]] = [
    Column("TOKEN", "token_id"),
    Column("TENANT", "tenant"),
    Column("ROLE", "role"),
    Column("DESCRIPTION", "description"),
    Column("EXPIRES", "expires_at"),
    Column("LAST-USED", "last_used_at"),
    Column("REVOKED", "revoked_at"),
]

DETAIL_COLUMNS: list[Column[pb.ApiToken]] = [
    Column("Token", "token_id"),
    Column("Tenant", "tenant"),
    Column("Role", "role"),
    Column("Description", "description"),
    Column("Created by", "created_by"),
    Column("Created", "created_at"),
    Column("Expires", "expires_at"),
    Column("Last used", "last_used_at"),
    Column("Revoked", "revoked_at"),
]


def _create(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.CreateTokenRequest(
        tenant=args.tenant,
        role=parse_enum(pb.Role, args.role.replace("-", "_")),
        description=args.description,
    )
    if args.expires_in is not None:
        request.ttl.FromTimedelta(args.expires_in)
    with ctx.connect() as client:
        response = client.call(pb_grpc.TokenServiceStub(client.channel).CreateToken, request)
    secret = response.secret
    ctx.printer.show(
        response,
        lambda now: [key_values(response.token, DETAIL_COLUMNS, now), Text(), Text(f"Secret:  {secret}")],
    )
    ctx.err.print(Text("Store the secret now: it is not kept by the server and cannot be shown again."))
    return 0


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListTokensRequest(
        tenant=args.tenant,
        include_inactive=args.include_inactive,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.TokenServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListTokens, request, "tokens", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.tokens, LIST_COLUMNS, now)])
    return 0


def _get(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        response = client.call(
            pb_grpc.TokenServiceStub(client.channel).GetToken, pb.GetTokenRequest(token_id=args.token_id)
        )
    ctx.printer.show(response, lambda now: [key_values(response.token, DETAIL_COLUMNS, now)])
    return 0


def _revoke(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        response = client.call(
            pb_grpc.TokenServiceStub(client.channel).RevokeToken,
            pb.RevokeTokenRequest(token_id=args.token_id),
        )
    ctx.printer.show(response, lambda now: [key_values(response.token, DETAIL_COLUMNS, now)])
    return 0


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `tokens` and its verbs."""
    noun = nouns.add_parser(
        "tokens",
        aliases=["token"],
        help="API tokens (admins)",
        description=(
            "API tokens authenticate srctl, grpcurl and automation as 'authorization: Bearer\n"
            "<secret>'. Use one with --token, SRCTL_TOKEN or a context (srctl context set)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = add_verb(
        verbs,
        "create",
        summary="create a token and print its secret once",
        description=(
            "Create a token with a role no higher than your own. The secret is printed once;\n"
            "the server keeps only its hash."
        ),
        examples=(
            "  srctl tokens create --role viewer --description grafana --expires-in 30d\n"
            "  export SRCTL_TOKEN=$(srctl tokens create --role operator -o json | jq -r .secret)"
        ),
        handler=_create,
        common=common,
    )
    create.add_argument("--role", required=True, choices=ROLES, help="at most your own role")
    create.add_argument("--tenant", default="", help="tenant (default: yours; ignored for platform-admin)")
    create.add_argument("--description", default="")
    create.add_argument(
        "--expires-in", type=duration, default=None, metavar="DURATION", help="e.g. 30d (default 90d)"
    )

    listing = add_verb(
        verbs,
        "list",
        summary="list tokens (never their secrets)",
        description="List tokens, newest first; revoked and expired ones with --include-inactive.",
        examples="  srctl tokens list --include-inactive",
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    listing.add_argument("--include-inactive", action="store_true", help="also revoked and expired tokens")
    add_list_flags(listing, "tokens")

    get = add_verb(
        verbs,
        "get",
        summary="show one token",
        description="Show a token's metadata, including when it was last used.",
        examples="  srctl tokens get abcd2345efgh",
        handler=_get,
        common=common,
    )
    get.add_argument("token_id", metavar="TOKEN_ID")

    revoke = add_verb(
        verbs,
        "revoke",
        summary="revoke a token",
        description="Revoke a token: this replica refuses it at once, the others within seconds.",
        examples="  srctl tokens revoke abcd2345efgh",
        handler=_revoke,
        common=common,
    )
    revoke.add_argument("token_id", metavar="TOKEN_ID")
