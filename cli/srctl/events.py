"""`srctl events`: list the infrastructure events (state changes) and watch them happen."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import RenderableType
from rich.text import Text

from serviceradar.admin.v1 import event_service_pb2 as pb
from serviceradar.admin.v1 import event_service_pb2_grpc as pb_grpc
from srctl.argtypes import int_between
from srctl.command import Context, add_verb, collect_pages, hint_next_page
from srctl.output import NONE, Column, Format, format_timestamp, table

_AGO = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> Timestamp:
    """`--since`: an age such as 30s, 15m, 2h, 7d, or an RFC 3339 time (2025-01-02T03:04:05Z)."""
    moment: datetime
    match = _AGO.fullmatch(text)
    if match:
        amount, unit = match.groups()
        moment = (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an age (30s, 15m, 2h, 7d) or an RFC 3339 time, got {text!r}"
            ) from None
        if moment.tzinfo is None:
            raise argparse.ArgumentTypeError(f"give the time zone, e.g. {text}Z")
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def _entity(record: pb.EventRecord) -> str:
    return f"{record.event.entity_type}/{record.event.entity_id}"


def _change(record: pb.EventRecord) -> str:
    return f"{record.event.old_state or NONE} -> {record.event.new_state}"


def _published(record: pb.EventRecord) -> str:
    return "yes" if record.HasField("published_at") else "no"


LIST_COLUMNS: list[Column[pb.EventRecord]] = [
    Column("SEQ", lambda r: str(r.sequence)),
    Column("TIME", lambda r: format_timestamp(r.event.time, datetime.now(UTC))),
    Column("TENANT", lambda r: r.event.tenant),
    Column("ENTITY", _entity),
    Column("EVENT", lambda r: r.event.type),
    Column("CHANGE", _change),
    Column("REASON", lambda r: r.event.reason or NONE),
    Column("PUBLISHED", _published),
]

# `watch` prints a line per event as it comes, so the columns have fixed widths.
_WATCH_FORMAT = "{:<20}  {:<12}  {:<28}  {:<12}  {:<26}  {}"


def watch_header() -> str:
    """The header line of `events watch` in table format."""
    return _WATCH_FORMAT.format("TIME", "TENANT", "ENTITY", "EVENT", "CHANGE", "REASON").rstrip()


def watch_line(record: pb.EventRecord) -> str:
    """One event of `events watch` in table format."""
    when = record.event.time.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return _WATCH_FORMAT.format(
        when, record.event.tenant, _entity(record), record.event.type, _change(record), record.event.reason
    ).rstrip()


def _set_filters(request: pb.ListEventsRequest | pb.WatchEventsRequest, args: argparse.Namespace) -> None:
    request.tenant = args.tenant
    request.entity_type = args.entity_type
    request.event_type = args.type
    request.entity_id = args.entity
    if args.since is not None:
        request.since.CopyFrom(args.since)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListEventsRequest(page_size=args.page_size, page_token=args.page_token)
    _set_filters(request, args)
    with ctx.connect() as client:
        stub = pb_grpc.EventServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListEvents, request, "events", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.events, LIST_COLUMNS, now)])
    hint_next_page(ctx, response, "events")
    return 0


def _watch(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.WatchEventsRequest(resume_token=args.resume)
    _set_filters(request, args)
    with ctx.connect() as client:
        if ctx.printer.fmt is Format.TABLE:
            ctx.printer.console.file.write(watch_header() + "\n")
        stub = pb_grpc.EventServiceStub(client.channel)
        # A watch runs until the operator stops it (or --count is reached).
        stream = client.stream(stub.WatchEvents, request)
        seen = 0
        try:
            for response in stream:
                ctx.printer.show(response, partial(_watch_view, response))
                seen += 1
                if args.count and seen >= args.count:
                    break
        finally:
            stream.cancel()
    return 0


def _watch_view(response: pb.WatchEventsResponse, _now: datetime) -> Sequence[RenderableType]:
    return [Text(watch_line(response.record))]


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    parser.add_argument(
        "--entity-type",
        default="",
        metavar="TYPE",
        help="only this kind of entity: poller, agent, checker, ...",
    )
    parser.add_argument(
        "--entity",
        default="",
        metavar="ID",
        help="only this entity (e.g. demo, demo/a1); needs --entity-type",
    )
    parser.add_argument(
        "--type", default="", metavar="EVENT", help="only this event type: offline, healthy, ..."
    )


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `events` and its verbs."""
    noun = nouns.add_parser(
        "events",
        aliases=["event"],
        help="infrastructure events: state changes of pollers, agents, checkers",
        description=(
            "Read the infrastructure events the core keeps in its outbox. They are the same\n"
            "events it relays to NATS JetStream (subjects sr.infra.<tenant>.<entity>.<event>),\n"
            "and they are there without NATS too."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    list_parser = add_verb(
        verbs,
        "list",
        summary="list events, oldest first",
        description=(
            "List events in the order they were written. PUBLISHED says whether the relay\n"
            "has published the event to JetStream yet (always 'no' without NATS). Every page\n"
            "is fetched unless --no-all is given."
        ),
        examples=(
            "  srctl events list --since 1h\n"
            "  srctl events list --entity-type poller --type offline --since 1d\n"
            "  srctl events list --entity-type poller --entity demo -o json | jq '.events[].event.type'"
        ),
        handler=_list,
        common=common,
    )
    _add_filters(list_parser)
    list_parser.add_argument(
        "--since", type=parse_since, metavar="WHEN", help="only events from then on: 15m, 2h, 7d or RFC 3339"
    )
    list_parser.add_argument(
        "--page-size",
        metavar="N",
        type=int_between(1, 1000),
        default=0,
        help="events per request, 1-1000 (default: the server's, 100)",
    )
    list_parser.add_argument(
        "--all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow next_page_token through every page (default); --no-all stops after one",
    )
    list_parser.add_argument(
        "--page-token", metavar="TOKEN", default="", help="start at this page (from --no-all)"
    )

    watch_parser = add_verb(
        verbs,
        "watch",
        summary="print events as they happen",
        description=(
            "Stream events as they are written, until interrupted (Ctrl-C) or --count events\n"
            "were printed. With --since, first replay the events from then on. With -o json,\n"
            "each event is one JSON document carrying a resume_token; --resume TOKEN continues\n"
            "after that event, missing nothing."
        ),
        examples=(
            "  srctl events watch\n"
            "  srctl events watch --entity-type poller --type offline\n"
            "  srctl events watch --since 10m -o json | jq -c '.record.event'"
        ),
        handler=_watch,
        common=common,
    )
    _add_filters(watch_parser)
    watch_parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="replay events from then on: 15m, 2h, 7d or RFC 3339",
    )
    watch_parser.add_argument(
        "--resume",
        default="",
        metavar="TOKEN",
        help="continue after the event that carried this resume_token",
    )
    watch_parser.add_argument(
        "--count", type=int_between(1), default=0, metavar="N", help="stop after N events (default: never)"
    )
