"""`srctl templates`: register checker templates from files, read, list and delete them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from rich.console import RenderableType
from rich.text import Text

from serviceradar.admin.v1 import template_service_pb2 as pb
from serviceradar.admin.v1 import template_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.errors import ExitCode, UsageError
from srctl.listing import add_list_flags
from srctl.output import Column, Format, key_values, table

_FORMATS = {"json": pb.TEMPLATE_FORMAT_JSON, "toml": pb.TEMPLATE_FORMAT_TOML}

LIST_COLUMNS: list[Column[pb.Template]] = [
    Column("NAME", "name"),
    Column("TYPE", "checker_type"),
    Column("FORMAT", "format"),
    Column("VERSION", "version"),
    Column("SOURCE", "source"),
    Column("REGISTERED BY", "registered_by"),
    Column("CREATED", "created_at"),
]

DETAIL_COLUMNS: list[Column[pb.Template]] = [
    Column("Tenant", "tenant"),
    Column("Name", "name"),
    Column("Checker type", "checker_type"),
    Column("Format", "format"),
    Column("Version", "version"),
    Column("Digest", "digest"),
    Column("Source", "source"),
    Column("Registered by", "registered_by"),
    Column("Created", "created_at"),
]


def template_view(template: pb.Template, now: datetime) -> Sequence[RenderableType]:
    """The table view of one version: its details, then the body as registered."""
    return [key_values(template, DETAIL_COLUMNS, now), Text(""), Text(template.body.rstrip("\n"))]


def body_format(path: Path, given: str | None) -> pb.TemplateFormat.ValueType:
    """The format named with --format, else the one the file's extension says."""
    name = given or path.suffix.lstrip(".").lower()
    if name not in _FORMATS:
        raise UsageError(f"cannot tell the format of {path}: name it with --format json|toml")
    return _FORMATS[name]


def _register(args: argparse.Namespace, ctx: Context) -> int:
    path = Path(args.file)
    try:
        body = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    request = pb.RegisterTemplateRequest(
        tenant=args.tenant,
        name=args.name,
        checker_type=args.type,
        format=body_format(path, args.format),
        body=body,
    )
    with ctx.connect() as client:
        response = client.call(pb_grpc.TemplateServiceStub(client.channel).RegisterTemplate, request)
    template = response.template

    def view(now: datetime) -> Sequence[RenderableType]:
        what = "registered version" if response.created else "unchanged: the latest version is"
        return [Text(f"{template.name}: {what} {template.version}")]

    ctx.printer.show(response, view)
    return ExitCode.OK


def _get(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.GetTemplateRequest(tenant=args.tenant, name=args.name, version=args.version)
    with ctx.connect() as client:
        response = client.call(pb_grpc.TemplateServiceStub(client.channel).GetTemplate, request)
    if args.body_only and ctx.printer.fmt is Format.TABLE:
        ctx.printer.console.file.write(response.template.body)
        return ExitCode.OK
    ctx.printer.show(response, lambda now: template_view(response.template, now))
    return ExitCode.OK


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListTemplatesRequest(
        tenant=args.tenant, prefix=args.prefix, page_size=args.page_size, page_token=args.page_token
    )
    with ctx.connect() as client:
        stub = pb_grpc.TemplateServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListTemplates, request, "templates", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.templates, LIST_COLUMNS, now)])
    hint_next_page(ctx, response, "templates")
    return ExitCode.OK


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.DeleteTemplateRequest(tenant=args.tenant, name=args.name)
    with ctx.connect() as client:
        response = client.call(pb_grpc.TemplateServiceStub(client.channel).DeleteTemplate, request)
    ctx.printer.show(
        response, lambda now: [Text(f"{args.name}: deleted {response.versions_deleted} version(s)")]
    )
    return ExitCode.OK


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `templates` and its verbs."""
    noun = nouns.add_parser(
        "templates",
        aliases=["template"],
        help="checker templates: versioned JSON or TOML configuration bodies",
        description=(
            "Register, read, list and delete checker templates. Each changed body registered\n"
            "under a name makes a new version; edges register their defaults at start but never\n"
            "replace a version an operator registered (docs/templates.md)."
        ),
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    reg = add_verb(
        verbs,
        "register",
        summary="register a template from a file (a new version when the body changed)",
        description=(
            "Register the body of FILE under NAME. The format comes from the file extension\n"
            "(.json, .toml) unless --format says; the body is checked for well-formedness and,\n"
            "for the checker types snmp, sweep, port and icmp, against their schema."
        ),
        examples=(
            "  srctl templates register snmp/core-switches --type snmp -f snmp.toml\n"
            "  srctl templates register port/https --type port -f https.json -o json"
        ),
        handler=_register,
        common=common,
    )
    reg.add_argument("name", metavar="NAME", help="template name, e.g. snmp/core-switches")
    reg.add_argument("-f", "--file", required=True, metavar="FILE", help="file holding the body")
    reg.add_argument("--type", required=True, metavar="TYPE", help="checker type, e.g. snmp, sweep, port")
    reg.add_argument("--format", choices=sorted(_FORMATS), help="body format (default: from the extension)")
    reg.add_argument("--tenant", default="", help="tenant (default: yours)")

    get = add_verb(
        verbs,
        "get",
        summary="show a template: the latest version, or --version N",
        description="Show one template version with its body. --body-only prints just the body.",
        examples=(
            "  srctl templates get snmp/core-switches\n"
            "  srctl templates get snmp/core-switches --version 2 --body-only > snmp.toml"
        ),
        handler=_get,
        common=common,
    )
    get.add_argument("name", metavar="NAME", help="template name")
    get.add_argument("--version", type=int, default=0, metavar="N", help="version (default: the latest)")
    get.add_argument("--body-only", action="store_true", help="print only the body")
    get.add_argument("--tenant", default="", help="tenant (default: yours)")

    lst = add_verb(
        verbs,
        "list",
        summary="list templates (latest versions) by name",
        description="List the latest version of each template, by name, optionally by name prefix.",
        examples="  srctl templates list\n  srctl templates list --prefix snmp/ -o json",
        handler=_list,
        common=common,
    )
    lst.add_argument("--prefix", default="", help="only names starting with this")
    lst.add_argument("--tenant", default="", help="tenant (default: yours)")
    add_list_flags(lst, "templates")

    delete = add_verb(
        verbs,
        "delete",
        summary="delete a template and all its versions",
        description="Delete a template with every version. An edge may register its default again.",
        examples="  srctl templates delete snmp/core-switches",
        handler=_delete,
        common=common,
    )
    delete.add_argument("name", metavar="NAME", help="template name")
    delete.add_argument("--tenant", default="", help="tenant (default: yours)")
