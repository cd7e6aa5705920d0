"""Rendering of protobuf messages as tables (rich), JSON or YAML.

JSON and YAML print the RPC response message itself, in the proto3 JSON mapping with proto
field names, the shape grpcurl shows: a list command prints e.g. {"pollers": [...]} with every
page merged. Fields at their default value are printed too, so scripts see stable keys.

Tables are for people: enum values lose their type prefix and are lower-cased
(POLLER_STATE_HEALTHY -> healthy), timestamps read as ISO-8601 UTC plus an age, empty values as
<none>. A noun describes its table with a list of `Column`s and calls `Printer.show`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import yaml
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    # Messages carry upb (C) descriptors; and only the stubs have the enum wrapper that is
    # generic in the type of its values.
    from google._upb._message import Descriptor as UpbDescriptor
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

NONE = "<none>"

# Wide enough for any row; rich pads nothing beyond a table's natural width.
_UNBOUNDED_WIDTH = 10_000

# Styles only show on a terminal; rich drops them when the output is piped.
_STATE_STYLES = {
    "healthy": "green",
    "connected": "green",
    "ok": "green",
    "degraded": "yellow",
    "recovering": "yellow",
    "draining": "yellow",
    "maintenance": "cyan",
    "connecting": "cyan",
    "offline": "red",
    "disconnected": "red",
    "unavailable": "red",
    "down": "red",
    "drift": "yellow",
}


class Format(enum.StrEnum):
    """Output format chosen with -o."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


M = TypeVar("M", bound=Message)
V = TypeVar("V", bound=int)


@dataclass(frozen=True, slots=True)
class Column(Generic[M]):
    """One table column (or one line of a key/value view).

    `source` is either the name of a field of the message, formatted by its type, or a
    function computing the cell, for derived columns such as configuration drift.
    """

    header: str
    source: str | Callable[[M], str]

    def render(self, message: M, now: datetime) -> str:
        """The cell text for `message`."""
        if isinstance(self.source, str):
            return format_field(message, self.source, now)
        return self.source(message)


class _EnumValueLike(Protocol):
    @property
    def name(self) -> str: ...


class EnumLike(Protocol):
    """An enum descriptor; messages hold upb (C) ones, enum wrappers pure-Python ones."""

    @property
    def name(self) -> str: ...

    @property
    def values_by_number(self) -> Mapping[int, _EnumValueLike]: ...


def enum_prefix(enum_type: EnumLike) -> str:
    """The prefix proto style puts on every value of `enum_type`: PollerState -> POLLER_STATE_."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_type.name).upper() + "_"


def short_enum(enum_type: EnumLike, number: int) -> str:
    """A value of `enum_type` for people: POLLER_STATE_HEALTHY -> healthy; unset -> <none>."""
    if number == 0:
        return NONE
    value = enum_type.values_by_number.get(number)
    if value is None:
        # A value newer than this client's copy of the contract.
        return str(number)
    return value.name.removeprefix(enum_prefix(enum_type)).lower()


def enum_choices(enum: _EnumTypeWrapper[V]) -> list[str]:
    """The short names of every set value of `enum`, for argparse choices."""
    return [short_enum(enum.DESCRIPTOR, number) for number in enum.values() if number]


def parse_enum(enum: _EnumTypeWrapper[V], short: str) -> V:
    """The value of `enum` whose short name is `short` (inverse of `short_enum`).

    Raises ValueError for an unknown name.
    """
    return enum.Value(enum_prefix(enum.DESCRIPTOR) + short.upper())


def format_age(delta: timedelta) -> str:
    """A compact age: 12s, 5m3s, 2h5m, 3d4h; negative deltas are in the future."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in " + format_age(-delta)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}d{hrs}h" if hrs else f"{days}d"
    if hours:
        return f"{hours}h{mins}m" if mins else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def format_timestamp(timestamp: Timestamp, now: datetime) -> str:
    """ISO-8601 UTC to the second plus the age relative to `now`: 2025-01-02T03:04:05Z (12s ago)."""
    when = timestamp.ToDatetime(tzinfo=UTC)
    iso = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    age = format_age(now - when)
    return f"{iso} ({age})" if age.startswith("in ") else f"{iso} ({age} ago)"


def format_duration(duration: Duration) -> str:
    """Seconds with up to millisecond precision: 30s, 1.5s, -0.002s."""
    seconds = duration.seconds + duration.nanos / 1e9
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _format_scalar(value: object, enum_type: EnumLike | None, now: datetime) -> str:
    if enum_type is not None and isinstance(value, int):
        return short_enum(enum_type, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Timestamp):
        return format_timestamp(value, now)
    if isinstance(value, Duration):
        return format_duration(value)
    if isinstance(value, Message):
        return text_format.MessageToString(value, as_one_line=True) or NONE
    return str(value) if value != "" else NONE


def format_field(message: Message, name: str, now: datetime) -> str:
    """Field `name` of `message` as one line of text, by the field's type."""
    field = message.DESCRIPTOR.fields_by_name[name]
    value = getattr(message, name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or NONE
    if field.is_repeated:
        if field.message_type is not None:
            return str(len(value))
        return ",".join(_format_scalar(item, field.enum_type, now) for item in value) or NONE
    if field.message_type is not None and not message.HasField(name):
        return NONE
    return _format_scalar(value, field.enum_type, now)


def _cell(text: str) -> Text:
    # Text, not str: cell values are data (labels, messages) and must not be read as markup.
    return Text(text, style=_STATE_STYLES.get(text, ""))


def table(rows: Iterable[M], columns: Sequence[Column[M]], now: datetime) -> Table:
    """A kubectl-style table: one row per message, upper-case headers, no borders."""
    result = Table(
        box=None,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
    )
    for column in columns:
        result.add_column(column.header)
    for row in rows:
        result.add_row(*(_cell(column.render(row, now)) for column in columns))
    return result


def key_values(message: M, columns: Sequence[Column[M]], now: datetime) -> Table:
    """A key/value view of one message: `HEADER:  value` per column."""
    result = Table.grid(padding=(0, 2))
    result.add_column(style="bold")
    result.add_column()
    for column in columns:
        result.add_row(Text(column.header + ":"), _cell(column.render(message, now)))
    return result


def to_dict(message: Message) -> dict[str, Any]:
    """`message` in the proto3 JSON mapping with proto field names and every field present.

    Keys follow the order of the .proto file, so YAML reads like the contract.
    """
    data = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _in_proto_order(message.DESCRIPTOR, data)


def _in_proto_order(descriptor: Descriptor | UpbDescriptor, data: dict[str, Any]) -> dict[str, Any]:
    # MessageToDict lists set fields before defaulted ones; rebuild each object in field order.
    ordered: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        nested = field.message_type
        # Well-known types have their own JSON shapes (a Timestamp is a string, a Struct any
        # object), so only the project's own messages are reordered.
        if nested is not None and not nested.full_name.startswith("google.protobuf."):
            if nested.GetOptions().map_entry:
                entry_type = nested.fields_by_name["value"].message_type
                if entry_type is not None and not entry_type.full_name.startswith("google.protobuf."):
                    value = {k: _in_proto_order(entry_type, v) for k, v in value.items()}
            elif isinstance(value, list):
                value = [_in_proto_order(nested, item) for item in value]
            else:
                value = _in_proto_order(nested, value)
        ordered[field.name] = value
    return ordered


def dump(data: dict[str, Any], fmt: Format) -> str:
    """`data` as a JSON or YAML document, ending with a newline."""
    if fmt is Format.JSON:
        return json.dumps(data, indent=2) + "\n"
    if fmt is Format.YAML:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    raise ValueError(f"not a document format: {fmt}")


# A view turns a response into what a table-format user sees; it gets the render time so
# every age on screen is measured from the same instant.
View = Callable[[datetime], Sequence[RenderableType]]


class Printer:
    """Writes command output to stdout in the format chosen with -o."""

    def __init__(self, fmt: Format, console: Console) -> None:
        self.fmt = fmt
        self.console = console
        self._documents = 0

    def show(self, message: Message, view: View) -> None:
        """Print `message`: its `view` as tables, or the message itself as JSON or YAML.

        Called more than once (a stream of responses), JSON documents follow one another, as
        `jq` reads them, and YAML documents are separated by `---`.
        """
        if self.fmt is Format.TABLE:
            for renderable in view(datetime.now(UTC)):
                # Tables pad every cell to its column width; trailing blanks only get in the way
                # of diff and of tests, so lines are trimmed.
                with self.console.capture() as capture:
                    self.console.print(renderable)
                lines = capture.get().splitlines()
                self.console.file.write("".join(line.rstrip() + "\n" for line in lines))
            self.console.file.flush()
            return
        text = dump(to_dict(message), self.fmt)
        if self.fmt is Format.YAML and self._documents:
            text = "---\n" + text
        self._documents += 1
        # Straight to the file: rich would wrap long lines and colour the document.
        self.console.file.write(text)
        self.console.file.flush()


def make_console(stderr: bool = False) -> Console:
    """A console for stdout, or for stderr (progress, notices).

    Stdout is never narrowed to the terminal: rows stay whole lines, as kubectl prints them,
    so a table reads the same on a terminal, through grep and in a log.
    """
    if stderr:
        return Console(stderr=True)
    return Console(width=_UNBOUNDED_WIDTH)
