"""`srctl sources`: integration sources (Armis, NetBox, generic) and where they run.

Credentials are write-only: `--credential NAME=VALUE` or, better, `--credential NAME=@FILE`
(a value on the command line shows in shell history and process listings). No command
prints them back; the server returns their names only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serviceradar.admin.v1 import source_service_pb2 as pb
from serviceradar.admin.v1 import source_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import config_pb2
from srctl.output import Column, enum_choices, parse_enum, short_enum
from srctl.work import (
    SpecFlags,
    WorkNoun,
    assignment_columns,
    assignment_details,
    parse_pair,
    register_noun,
    seconds_text,
    short_duration,
    to_duration,
)

KINDS = enum_choices(config_pb2.SourceKind)


def parse_credential(text: str) -> tuple[str, str]:
    """`NAME=VALUE`, or `NAME=@FILE` to read the value from a file (trailing newline dropped)."""
    name, value = parse_pair(text)
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            value = path.read_text().rstrip("\r\n")
        except OSError as exc:
            # Never echo the value: only the file name, which the operator typed.
            raise argparse.ArgumentTypeError(
                f"credential {name}: cannot read {path}: {exc.strerror}"
            ) from None
    return name, value


def _kind(source: pb.IntegrationSource) -> str:
    return short_enum(config_pb2.SourceKind.DESCRIPTOR, source.spec.kind)


LIST_COLUMNS: list[Column[pb.IntegrationSource]] = [
    Column("TENANT", "tenant"),
    Column("SOURCE", "name"),
    Column("PARTITION", lambda s: s.spec.partition),
    Column("KIND", _kind),
    Column("ENDPOINT", lambda s: s.spec.endpoint),
    Column("EVERY", lambda s: seconds_text(s.spec.sync_interval)),
    Column("CREDENTIALS", "credential_names"),
    Column("ENABLED", "enabled"),
    *assignment_columns(),
]

DETAIL_COLUMNS: list[Column[pb.IntegrationSource]] = [
    Column("Tenant", "tenant"),
    Column("Source", "name"),
    Column("Source id", "source_id"),
    Column("Partition", lambda s: s.spec.partition),
    Column("Kind", _kind),
    Column("Endpoint", lambda s: s.spec.endpoint),
    Column("Sync every", lambda s: seconds_text(s.spec.sync_interval)),
    Column(
        "Settings", lambda s: ",".join(f"{k}={v}" for k, v in sorted(s.spec.settings.items())) or "<none>"
    ),
    Column("Credentials", "credential_names"),
    Column("Credentials set", "credentials_updated_at"),
    Column("Enabled", "enabled"),
    *assignment_details(),
    Column("Revision", "revision"),
    Column("Created", "created_at"),
    Column("Updated", "updated_at"),
]


def _add_spec_flags(parser: argparse.ArgumentParser, for_update: bool) -> None:
    group = parser.add_argument_group("source")
    group.add_argument("--partition", required=not for_update, help="partition whose pollers pull it")
    group.add_argument("--kind", choices=KINDS, required=not for_update, help="kind of source")
    group.add_argument("--endpoint", required=not for_update, help="base URL of its API (http or https)")
    group.add_argument("--sync-every", type=short_duration, help="how often to pull: 1m to 7d (default 1h)")
    group.add_argument(
        "--setting",
        metavar="KEY=VALUE",
        type=parse_pair,
        action="append",
        help="kind-specific setting, e.g. query=..., page_size=500 (repeatable; on update they replace all)",
    )
    group.add_argument(
        "--credential",
        metavar="NAME=VALUE|NAME=@FILE",
        type=parse_credential,
        action="append",
        help="a credential, write-only (repeatable; on update they replace all); prefer @FILE",
    )
    if for_update:
        group.add_argument("--clear-credentials", action="store_true", help="remove the stored credentials")


def _read_spec_flags(args: argparse.Namespace) -> SpecFlags:
    spec = pb.SourceSpec()
    paths: list[str] = []
    if args.partition is not None:
        spec.partition = args.partition
        paths.append("partition")
    if args.kind is not None:
        spec.kind = parse_enum(config_pb2.SourceKind, args.kind)
        paths.append("kind")
    if args.endpoint is not None:
        spec.endpoint = args.endpoint
        paths.append("endpoint")
    if args.sync_every is not None:
        spec.sync_interval.CopyFrom(to_duration(args.sync_every))
        paths.append("sync_interval")
    if args.setting is not None:
        spec.settings.update(dict(args.setting))
        paths.append("settings")
    return SpecFlags(spec, paths)


def _credentials(args: argparse.Namespace, request: pb.CreateSourceRequest | pb.UpdateSourceRequest) -> None:
    if args.credential:
        request.credentials.update(dict(args.credential))


def _update_credentials(args: argparse.Namespace, request: pb.UpdateSourceRequest) -> None:
    _credentials(args, request)
    if args.credential or args.clear_credentials:
        request.update_mask.paths.append("credentials")


NOUN = WorkNoun(
    noun="sources",
    alias="source",
    singular="source",
    help="integration sources (Armis, NetBox, generic) and where they run",
    description=(
        "Integration sources: device inventories a poller pulls on a cadence. The leader\n"
        "places every enabled source on one available poller of its partition with the\n"
        "capability named by its kind (armis, netbox, generic). Credentials are sealed at\n"
        "rest and never shown again; only that poller receives them."
    ),
    stub=pb_grpc.SourceServiceStub,
    service="Source",
    module=pb,
    field="source",
    items="sources",
    list_columns=LIST_COLUMNS,
    detail_columns=DETAIL_COLUMNS,
    add_spec_flags=_add_spec_flags,
    read_spec_flags=_read_spec_flags,
    create_examples=(
        "  srctl sources create armis-prod --partition dc1 --kind armis \\\n"
        "      --endpoint https://acme.armis.com/api/v1 --credential api_key=@armis.key --sync-every 1h\n"
        "  srctl sources create netbox --partition dc1 --kind netbox --endpoint https://netbox.example \\\n"
        "      --credential token=@netbox.token --setting page_size=500"
    ),
    update_examples=(
        "  srctl sources update armis-prod --credential api_key=@new.key\n"
        "  srctl sources update netbox --sync-every 30m"
    ),
    prepare_create=_credentials,
    prepare_update=_update_credentials,
)


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `sources` and its verbs."""
    register_noun(nouns, common, NOUN)
