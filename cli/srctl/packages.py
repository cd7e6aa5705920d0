"""`srctl packages`: onboarding packages for pollers (issue, download once, revoke, delete)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from rich.text import Text

from serviceradar.admin.v1 import package_service_pb2 as pb
from serviceradar.admin.v1 import package_service_pb2_grpc as pb_grpc
from srctl.command import Context, add_verb, collect_pages
from srctl.connection import Role, connect, resolve_settings
from srctl.contextfile import with_context
from srctl.errors import UsageError
from srctl.listing import add_list_flags, duration
from srctl.output import Column, Format, enum_choices, key_values, parse_enum, table

ENV_DOWNLOAD_TOKEN = "SRCTL_DOWNLOAD_TOKEN"

LIST_COLUMNS: list[Column[pb.Package]] = [
    Column("PACKAGE", "package_id"),
    Column("TENANT", "tenant"),
    Column("PARTITION", "partition"),
    Column("POLLER", "poller_id"),
    Column("STATE", "state"),
    Column("CREATED", "created_at"),
    Column("EXPIRES", "expires_at"),
]

DETAIL_COLUMNS: list[Column[pb.Package]] = [
    Column("Package", "package_id"),
    Column("Tenant", "tenant"),
    Column("Partition", "partition"),
    Column("Poller", "poller_id"),
    Column("State", "state"),
    Column("SPIFFE ID", "spiffe_id"),
    Column("Certificate serial", "cert_serial"),
    Column("Certificate expires", "cert_not_after"),
    Column("Created by", "created_by"),
    Column("Created", "created_at"),
    Column("Expires", "expires_at"),
    Column("Delivered", "delivered_at"),
    Column("Activated", "activated_at"),
    Column("Revoked", "revoked_at"),
    Column("Revoke reason", "revoke_reason"),
]

# File names `download --out` writes: what a poller's configuration points at.
BUNDLE_FILES = {"ca_pem": "ca.pem", "cert_pem": "cert.pem", "key_pem": "key.pem"}


def _show_package(
    ctx: Context, response: pb.GetPackageResponse | pb.RevokePackageResponse | pb.DeletePackageResponse
) -> int:
    ctx.printer.show(response, lambda now: [key_values(response.package, DETAIL_COLUMNS, now)])
    return 0


def _issue(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.IssuePackageRequest(tenant=args.tenant, partition=args.partition, poller_id=args.poller)
    if args.ttl is not None:
        request.ttl.FromTimedelta(args.ttl)
    with ctx.connect() as client:
        response = client.call(pb_grpc.PackageServiceStub(client.channel).IssuePackage, request)
    token = response.download_token
    ctx.printer.show(
        response,
        lambda now: [
            key_values(response.package, DETAIL_COLUMNS, now),
            Text(),
            Text(f"Download token:  {token}"),
        ],
    )
    ctx.err.print(
        Text(
            "The download token works once and is not kept by the server. On the poller's host:\n"
            f"  srctl packages download {response.package.package_id} --download-token TOKEN --out DIR"
        )
    )
    return 0


def write_bundle(bundle: pb.PackageBundle, package_id: str, out: Path) -> list[Path]:
    """Write the bundle's files into `out`; the key readable by its owner only."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for field, name in BUNDLE_FILES.items():
        path = out / name
        mode = 0o600 if field == "key_pem" else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(getattr(bundle, field))
        os.chmod(path, mode)
        written.append(path)
    settings = out / "poller.json"
    settings.write_text(
        json.dumps(
            {
                "package_id": package_id,
                "core_address": bundle.core_address,
                "tenant": bundle.tenant,
                "partition": bundle.partition,
                "poller_id": bundle.poller_id,
                "ca_file": "ca.pem",
                "cert_file": "cert.pem",
                "key_file": "key.pem",
            },
            indent=2,
        )
        + "\n"
    )
    written.append(settings)
    return written


def _download(args: argparse.Namespace, ctx: Context) -> int:
    token = args.download_token or ctx.env.get(ENV_DOWNLOAD_TOKEN, "")
    if not token:
        raise UsageError(f"give the package's download token with --download-token or {ENV_DOWNLOAD_TOKEN}")
    if args.out is None and ctx.printer.fmt is Format.TABLE:
        raise UsageError("give --out DIR to write the bundle (or -o json to print it, private key included)")
    # The download token is the credential of this call, whatever token is configured.
    settings = dataclasses.replace(
        resolve_settings(args, with_context(args, ctx.env), Role.OPERATOR), token=token
    )
    with connect(settings) as client:
        response = client.call(
            pb_grpc.PackageServiceStub(client.channel).DownloadPackage,
            pb.DownloadPackageRequest(package_id=args.package_id),
        )
    if args.out is None:
        ctx.printer.show(response, lambda now: [])
        return 0
    written = write_bundle(response.bundle, response.package.package_id, args.out)
    ctx.printer.show(
        response.package,
        lambda now: [Text("\n".join(f"wrote {path}" for path in written))],
    )
    return 0


def _list(args: argparse.Namespace, ctx: Context) -> int:
    request = pb.ListPackagesRequest(
        tenant=args.tenant,
        partition=args.partition,
        state=parse_enum(pb.PackageState, args.state) if args.state else pb.PACKAGE_STATE_UNSPECIFIED,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    with ctx.connect() as client:
        stub = pb_grpc.PackageServiceStub(client.channel)
        response = collect_pages(ctx, client, stub.ListPackages, request, "packages", all_pages=args.all)
    ctx.printer.show(response, lambda now: [table(response.packages, LIST_COLUMNS, now)])
    return 0


def _get(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.PackageServiceStub(client.channel)
        response = client.call(stub.GetPackage, pb.GetPackageRequest(package_id=args.package_id))
    return _show_package(ctx, response)


def _revoke(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.PackageServiceStub(client.channel)
        response = client.call(
            stub.RevokePackage, pb.RevokePackageRequest(package_id=args.package_id, reason=args.reason)
        )
    return _show_package(ctx, response)


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.connect() as client:
        stub = pb_grpc.PackageServiceStub(client.channel)
        response = client.call(stub.DeletePackage, pb.DeletePackageRequest(package_id=args.package_id))
    return _show_package(ctx, response)


def register(
    nouns: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `packages` and its verbs."""
    noun = nouns.add_parser(
        "packages",
        aliases=["package"],
        help="onboarding packages for pollers",
        description=(
            "An onboarding package holds a poller's key, client certificate, the CA to verify\n"
            "the core with and the core's address. It is downloaded once, activated by the\n"
            "poller's first registration, expires unused, and can be revoked and deleted."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    verbs = noun.add_subparsers(dest="verb", required=True, metavar="VERB")

    issue = add_verb(
        verbs,
        "issue",
        summary="issue a package for a poller and print its download token once",
        description="Make a key pair and certificate for (tenant, partition, poller).",
        examples="  srctl packages issue --poller edge-7 --partition dc1 --ttl 48h",
        handler=_issue,
        common=common,
    )
    issue.add_argument("--poller", required=True, help="poller id the certificate is for")
    issue.add_argument("--partition", required=True, help="partition the poller belongs to")
    issue.add_argument("--tenant", default="", help="tenant (default: yours; 'default' for a platform admin)")
    issue.add_argument(
        "--ttl", type=duration, default=None, metavar="DURATION", help="time to download and activate"
    )

    download = add_verb(
        verbs,
        "download",
        summary="download a package's bundle (once) into a directory",
        description=(
            "Download the bundle with the package's single-use download token and write\n"
            "ca.pem, cert.pem, key.pem (mode 0600) and poller.json into --out. Needs no other\n"
            "credential: point --server at the core's token port (admin_listen)."
        ),
        examples=(
            "  srctl packages download 5f2c... --download-token srd_... --out /etc/serviceradar \\\n"
            "      --server core.example.net:50052 --cacert ca.pem"
        ),
        handler=_download,
        common=common,
    )
    download.add_argument("package_id", metavar="PACKAGE_ID")
    download.add_argument(
        "--download-token", default="", help=f"the token issue printed (env {ENV_DOWNLOAD_TOKEN})"
    )
    download.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="directory to write the bundle to"
    )

    listing = add_verb(
        verbs,
        "list",
        summary="list packages",
        description="List packages, newest first; deleted ones only with --state deleted.",
        examples="  srctl packages list --state delivered",
        handler=_list,
        common=common,
    )
    listing.add_argument(
        "--tenant", default="", help="only this tenant (default: yours; all for a platform admin)"
    )
    listing.add_argument("--partition", default="", help="only this partition")
    listing.add_argument("--state", choices=enum_choices(pb.PackageState), help="only this state")
    add_list_flags(listing, "packages")

    for name, summary, handler in (
        ("get", "show one package", _get),
        ("delete", "delete a package that is not in use (admin)", _delete),
    ):
        verb = add_verb(
            verbs,
            name,
            summary=summary,
            description=summary[0].upper() + summary[1:] + ".",
            examples=f"  srctl packages {name} 5f2c...",
            handler=handler,
            common=common,
        )
        verb.add_argument("package_id", metavar="PACKAGE_ID")

    revoke = add_verb(
        verbs,
        "revoke",
        summary="revoke a package: its certificate is refused on every edge call",
        description="Revoke a package; a poller using its certificate is refused from then on.",
        examples='  srctl packages revoke 5f2c... --reason "host decommissioned"',
        handler=_revoke,
        common=common,
    )
    revoke.add_argument("package_id", metavar="PACKAGE_ID")
    revoke.add_argument("--reason", default="", help="why, for the audit log")
