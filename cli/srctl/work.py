"""What `srctl checks`, `sweeps` and `sources` share: the verbs, assignment columns, and
turning flags into a spec message plus the update mask of the fields they set.

Each noun describes itself with a `WorkNoun`: its RPC stub and message classes, its
columns, and how its spec flags are declared and read. Update sends only the fields whose
flags were given (an update mask), so `srctl checks update web --interval 30s` changes the
interval and nothing else.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from serviceradar.admin.v1 import assignment_service_pb2 as assignment_pb
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.errors import UsageError
from srctl.listing import add_list_flags
from srctl.output import Column, enum_choices, key_values, parse_enum, short_enum, table

STATES = enum_choices(assignment_pb.AssignmentState)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def assignment_state(item: Any) -> str:
    """ASSIGNED, PENDING, ... of an item, for people."""
    return short_enum(assignment_pb.AssignmentState.DESCRIPTOR, item.assignment.state)


def assignment_poller(item: Any) -> str:
    """The poller an item runs on, or <none>."""
    return str(item.assignment.poller_id) or "<none>"


def assignment_reason(item: Any) -> str:
    """Why the item is where it is."""
    return str(item.assignment.reason) or "<none>"


def seconds_text(duration: Duration) -> str:
    """A Duration for people: 30s, 5m, 1h30m; <none> when zero."""
    total = duration.seconds + duration.nanos / 1e9
    if not total:
        return "<none>"
    if total < 1 or total != int(total):
        return f"{total:g}s"
    whole = int(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def to_duration(value: timedelta) -> Duration:
    """A Duration message of a timedelta."""
    message = Duration()
    message.FromTimedelta(value)
    return message


def parse_pair(text: str) -> tuple[str, str]:
    """`key=value` as a pair (the value may contain '=')."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def short_duration(text: str) -> timedelta:
    """An argparse type: 500ms, 30s, 1.5s, 5m, 1h30m, 7d."""
    value = text.strip()
    if not _DURATION.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a duration like 500ms, 30s, 5m, 1h30m or 7d: {text!r}")
    return sum(
        (timedelta(seconds=float(number) * _UNITS[unit]) for number, unit in _PART.findall(value)),
        timedelta(),
    )


@dataclass(frozen=True, slots=True)
class SpecFlags:
    """A spec message built from flags, and the spec fields they set."""

    spec: Message
    paths: list[str]


@dataclass(frozen=True)
class WorkNoun:
    """Everything about one kind of work item that the shared verbs need."""

    noun: str
    alias: str
    singular: str
    help: str
    description: str
    stub: Callable[[Any], Any]
    service: str  # e.g. "Check": RPCs are Create<service>, List<service>s, ...
    module: Any  # the generated *_pb2 module
    field: str  # response field holding one item ("check")
    items: str  # list response field holding the items ("checks")
    list_columns: Sequence[Column[Any]]
    detail_columns: Sequence[Column[Any]]
    add_spec_flags: Callable[[argparse.ArgumentParser, bool], None]
    read_spec_flags: Callable[[argparse.Namespace], SpecFlags]
    create_examples: str
    update_examples: str
    # Request fields beyond the spec (credentials), set on the request before it is sent.
    prepare_create: Callable[[argparse.Namespace, Any], None] | None = None
    prepare_update: Callable[[argparse.Namespace, Any], None] | None = None

    def rpc(self, client: Any, verb: str) -> Any:
        """The stub method for `verb` ("Create", "List", ...)."""
        suffix = "s" if verb == "List" else ""
        return getattr(self.stub(client.channel), f"{verb}{self.service}{suffix}")

    def request(self, verb: str, **fields: Any) -> Any:
        """A request message for `verb`."""
        suffix = "s" if verb == "List" else ""
        return getattr(self.module, f"{verb}{self.service}{suffix}Request")(**fields)


def _show_one(ctx: Context, noun: WorkNoun, response: Any) -> int:
    item = getattr(response, noun.field)
    ctx.printer.show(response, lambda now: [key_values(item, noun.detail_columns, now)])
    return 0


def _create(noun: WorkNoun, args: argparse.Namespace, ctx: Context) -> int:
    flags = noun.read_spec_flags(args)
    request = noun.request(
        "Create", tenant=args.tenant, name=args.name, spec=flags.spec, disabled=args.disabled
    )
    if noun.prepare_create is not None:
        noun.prepare_create(args, request)
    with ctx.connect() as client:
        response = client.call(noun.rpc(client, "Create"), request)
    return _show_one(ctx, noun, response)


def _list(noun: WorkNoun, args: argparse.Namespace, ctx: Context) -> int:
    request = noun.request(
        "List",
        tenant=args.tenant,
        partition=args.partition,
        poller_id=args.poller,
        state=parse_enum(assignment_pb.AssignmentState, args.state) if args.state else 0,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        response = collect_pages(
            ctx, client, noun.rpc(client, "List"), request, noun.items, all_pages=args.all
        )
    rows = getattr(response, noun.items)
    ctx.printer.show(response, lambda now: [table(rows, noun.list_columns, now)])
    hint_next_page(ctx, response, noun.noun)
    return 0


def _get(noun: WorkNoun, args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        response = client.call(
            noun.rpc(client, "Get"), noun.request("Get", tenant=args.tenant, name=args.name)
        )
    return _show_one(ctx, noun, response)


def _update(noun: WorkNoun, args: argparse.Namespace, ctx: Context) -> int:
    flags = noun.read_spec_flags(args)
    request = noun.request("Update", tenant=args.tenant, name=args.name, spec=flags.spec)
    request.update_mask.CopyFrom(FieldMask(paths=flags.paths))
    if noun.prepare_update is not None:
        noun.prepare_update(args, request)
    if not request.update_mask.paths:
        raise UsageError(f"nothing to update: give at least one flag (srctl {noun.noun} update --help)")
    with ctx.connect() as client:
        response = client.call(noun.rpc(client, "Update"), request)
    return _show_one(ctx, noun, response)


def _toggle(noun: WorkNoun, verb: str, args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        response = client.call(noun.rpc(client, verb), noun.request(verb, tenant=args.tenant, name=args.name))
    return _show_one(ctx, noun, response)


def _delete(noun: WorkNoun, args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        response = client.call(
            noun.rpc(client, "Delete"), noun.request("Delete", tenant=args.tenant, name=args.name)
        )
    ctx.printer.show(response, lambda now: [f"{noun.singular} {args.name} deleted"])
    return 0


def register_noun(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    noun: WorkNoun,
) -> None:
    """Add the noun with create, list, get, update, enable, disable and delete."""
    parser = nouns.add_parser(
        noun.noun,
        aliases=[noun.alias],
        help=noun.help,
        description=noun.description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def named(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", metavar="NAME", help=f"{noun.singular} name")
        parser.add_argument(
            "--tenant", default="", help="tenant (default: yours; 'default' for a platform admin)"
        )

    create = add_verb(
        verbs,
        "create",
        summary=f"create a {noun.singular}",
        description=f"Create a {noun.singular}; the leader places it on a poller of its partition at once.",
        examples=noun.create_examples,
        handler=partial(_create, noun),
        common=common,
    )
    named(create)
    noun.add_spec_flags(create, False)
    create.add_argument("--disabled", action="store_true", help="create it disabled")

    listing = add_verb(
        verbs,
        "list",
        summary=f"list {noun.noun} with where they run",
        description=(
            f"List {noun.noun} by tenant and name, with their assignment: STATE is assigned\n"
            "(running on POLLER), pending (no available poller can run it: see 'get' for why),\n"
            "unassigned (waiting for the leader) or disabled."
        ),
        examples=f"  srctl {noun.noun} list\n  srctl {noun.noun} list --state pending\n"
        f"  srctl {noun.noun} list --poller edge-7 -o json",
        handler=partial(_list, noun),
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    listing.add_argument("--partition", default="", help="only this partition")
    listing.add_argument("--poller", default="", help="only those assigned to this poller")
    listing.add_argument("--state", choices=STATES, help="only this assignment state")
    add_list_flags(listing, noun.noun)

    get = add_verb(
        verbs,
        "get",
        summary=f"show one {noun.singular}",
        description=f"Show one {noun.singular}, where it runs and why.",
        examples=f"  srctl {noun.noun} get NAME\n  srctl {noun.noun} get NAME -o yaml",
        handler=partial(_get, noun),
        common=common,
    )
    named(get)

    update = add_verb(
        verbs,
        "update",
        summary=f"change a {noun.singular}",
        description=f"Change the fields of a {noun.singular} given as flags; the others stay as they are.",
        examples=noun.update_examples,
        handler=partial(_update, noun),
        common=common,
    )
    named(update)
    noun.add_spec_flags(update, True)

    for verb, summary in (("enable", "enable"), ("disable", "disable (it runs nowhere)")):
        toggle = add_verb(
            verbs,
            verb,
            summary=f"{summary} a {noun.singular}",
            description=f"{verb.capitalize()} a {noun.singular}.",
            examples=f"  srctl {noun.noun} {verb} NAME",
            handler=partial(_toggle, noun, verb.capitalize()),
            common=common,
        )
        named(toggle)

    delete = add_verb(
        verbs,
        "delete",
        summary=f"delete a {noun.singular} (admin)",
        description=f"Delete a {noun.singular}.",
        examples=f"  srctl {noun.noun} delete NAME",
        handler=partial(_delete, noun),
        common=common,
    )
    named(delete)


def assignment_columns() -> list[Column[Any]]:
    """The STATE and POLLER columns of a list."""
    return [Column("STATE", assignment_state), Column("POLLER", assignment_poller)]


def assignment_details() -> list[Column[Any]]:
    """The assignment lines of a detail view."""
    return [
        Column("State", assignment_state),
        Column("Poller", assignment_poller),
        Column("Reason", assignment_reason),
        Column("Needs capability", lambda i: str(i.assignment.capability) or "<none>"),
    ]
