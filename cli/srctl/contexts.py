"""`srctl context`: named connection settings (server, CA, certificate, token) in a file.

The file is ``$SRCTL_CONFIG``, else ``$XDG_CONFIG_HOME/srctl/config.yaml`` (default
``~/.config/srctl/config.yaml``), written with mode 0600 because it may hold a token:

    current-context: prod
    contexts:
      prod:
        server: core.example.net:50052
        cacert: /etc/serviceradar/ca.pem
        token: srt_...

The context in use is ``--context``, else ``SRCTL_CONTEXT``, else ``current-context``. Its
values come after flags and environment variables: ``--token`` and ``SRCTL_TOKEN`` still win.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table
from rich.text import Text

from srctl.command import Context, add_verb
from srctl.contextfile import ENV_CONTEXT, FIELDS, config_path, load, save
from srctl.errors import UsageError
from srctl.output import Format, dump


def add_context_flag(parser: argparse.ArgumentParser) -> None:
    """Add the global --context flag."""
    parser.add_argument(
        "--context",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"use the named connection context from the srctl config file (env {ENV_CONTEXT})",
    )


def _set(args: argparse.Namespace, ctx: Context) -> int:
    document = load(ctx.env)
    entry = dict(document["contexts"].get(args.name) or {})
    # The connection flags themselves (--server, --token, ...) are what a context stores.
    given = {key: getattr(args, key) for key in FIELDS if getattr(args, key, None) is not None}
    if not given:
        raise UsageError("give at least one of --server, --cacert, --cert, --key, --data-dir, --token")
    for key, value in given.items():
        entry[key] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
    document["contexts"][args.name] = entry
    document.setdefault("current-context", args.name)
    path = save(ctx.env, document)
    ctx.err.print(Text(f"context {args.name} saved in {path}"))
    return 0


def _use(args: argparse.Namespace, ctx: Context) -> int:
    document = load(ctx.env)
    if args.name not in document["contexts"]:
        raise UsageError(f"no context named {args.name!r} in {config_path(ctx.env)}")
    document["current-context"] = args.name
    save(ctx.env, document)
    ctx.err.print(Text(f"using context {args.name}"))
    return 0


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    document = load(ctx.env)
    if document["contexts"].pop(args.name, None) is None:
        raise UsageError(f"no context named {args.name!r} in {config_path(ctx.env)}")
    if document.get("current-context") == args.name:
        document.pop("current-context")
    save(ctx.env, document)
    return 0


def _list(args: argparse.Namespace, ctx: Context) -> int:
    document = load(ctx.env)
    current = document.get("current-context")
    # A token is a secret: listings say whether a context has one, never what it is.
    shown = [
        {
            "name": name,
            "current": name == current,
            **{key: str(value) for key, value in values.items() if key in FIELDS and key != "token"},
            "token": "set" if values.get("token") else "",
        }
        for name, values in sorted(document["contexts"].items())
    ]
    if ctx.printer.fmt is not Format.TABLE:
        ctx.printer.console.file.write(dump({"contexts": shown}, ctx.printer.fmt))
        return 0
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in ("CURRENT", "NAME", "SERVER", "TOKEN", "CERT", "DATA-DIR"):
        grid.add_column(header)
    for row in shown:
        cells = ("*" if row["current"] else "", row["name"], row.get("server", ""), row["token"],
                 row.get("cert", ""), row.get("data_dir", ""))  # fmt: skip
        grid.add_row(*(Text(str(cell)) for cell in cells))
    ctx.printer.console.print(grid)
    return 0


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `context` and its verbs."""
    noun = nouns.add_parser(
        "context",
        aliases=["contexts"],
        help="named connection settings (server, CA, certificate, token)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")
    setter = add_verb(
        verbs,
        "set",
        summary="create or update a context from the connection flags given",
        description=(
            "Store the connection flags given (--server, --cacert, --cert, --key, --data-dir,\n"
            "--token) under NAME; other values of an existing context stay. The first context\n"
            "saved becomes the current one."
        ),
        examples=(
            "  srctl context set prod --server core.example.net:50052 --cacert ca.pem --token srt_...\n"
            "  srctl context set dev --data-dir ./data --server 127.0.0.1:50051\n"
            "  srctl --context prod pollers list"
        ),
        handler=_set,
        common=common,
    )
    setter.add_argument("name", metavar="NAME")
    for name, summary, handler in (
        ("use", "make a context current", _use),
        ("delete", "delete a context", _delete),
    ):
        verb = add_verb(
            verbs,
            name,
            summary=summary,
            description=summary[0].upper() + summary[1:] + ".",
            examples=f"  srctl context {name} prod",
            handler=handler,
            common=common,
        )
        verb.add_argument("name", metavar="NAME")
    add_verb(
        verbs,
        "list",
        summary="list contexts (tokens are never shown)",
        description="List the contexts; * marks the current one.",
        examples="  srctl context list",
        handler=_list,
        common=common,
    )
