"""What commands share: the invocation context, how a noun declares a verb, and paging."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.text import Text

from srctl.connection import Client, Role, connect, resolve_settings
from srctl.contextfile import with_context
from srctl.output import Format, Printer


@dataclass(frozen=True, slots=True)
class Context:
    """The invocation: parsed arguments, environment, stdout printer and stderr console."""

    args: argparse.Namespace
    env: Mapping[str, str]
    printer: Printer
    err: Console

    def connect(self, role: Role = Role.OPERATOR) -> Client:
        """A client acting as `role`; raises UsageError when its certificate files are missing."""
        return connect(resolve_settings(self.args, with_context(self.args, self.env), role))


Handler = Callable[[argparse.Namespace, Context], int]


def add_verb(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    examples: str,
    handler: Handler,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """Add verb `name` with its help (a summary, a description and examples) and handler.

    `common` holds the global flags, so they are accepted after the verb as well.
    """
    parser = verbs.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.set_defaults(handler=handler)
    return parser


class PageRequest(Protocol):
    """A List request: it carries the token of the page it asks for."""

    page_token: str


class PageResponse(Protocol):
    """A List response: it carries the token of the next page, empty on the last."""

    next_page_token: str


RequestT = TypeVar("RequestT", bound=PageRequest)
ResponseT = TypeVar("ResponseT", bound=PageResponse)


def collect_pages(
    ctx: Context,
    client: Client,
    method: grpc.UnaryUnaryMultiCallable[RequestT, ResponseT],
    request: RequestT,
    items: str,
    *,
    all_pages: bool,
) -> ResponseT:
    """Call a List RPC and merge its pages into one response, showing progress on stderr.

    `items` names the repeated field the pages hold. With `all_pages` every page is fetched
    and the result has no next_page_token; otherwise only the first page is, with its token.
    """
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=ctx.err,
        transient=True,
        # A progress line on a pipe or a log file is noise.
        disable=not ctx.err.is_terminal,
    ) as progress:
        task = progress.add_task(f"fetching {items}")
        merged = client.call(method, request)
        pages = 1
        while all_pages and merged.next_page_token:
            request.page_token = merged.next_page_token
            page = client.call(method, request)
            getattr(merged, items).extend(getattr(page, items))
            merged.next_page_token = page.next_page_token
            pages += 1
            count = len(getattr(merged, items))
            progress.update(task, description=f"fetching {items}: {count} in {pages} pages")
    return merged


def hint_next_page(ctx: Context, response: PageResponse, items: str) -> None:
    """After a table of one page (--no-all), tell on stderr how to fetch the next one.

    JSON and YAML carry next_page_token in the document itself, so they get no hint.
    """
    if response.next_page_token and ctx.printer.fmt is Format.TABLE:
        hint = f"more {items}: continue with --no-all --page-token {response.next_page_token}"
        ctx.err.print(Text(hint), soft_wrap=True)
