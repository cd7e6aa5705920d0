"""Entry point: the argument parser, dispatch to the noun modules, and exit codes."""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from srctl import (
    alerts,
    assignments,
    audit,
    batches,
    checks,
    cluster,
    contexts,
    devices,
    edge,
    events,
    notifiers,
    packages,
    partitions,
    pollers,
    results,
    sources,
    stats,
    sweeps,
    templates,
    tenants,
    tokens,
)
from srctl.command import Context, Handler
from srctl.connection import add_connection_flags
from srctl.errors import EXIT_CODES_HELP, ExitCode, UsageError, report_rpc_error, report_usage_error
from srctl.output import Format, Printer, make_console

DESCRIPTION = """\
srctl drives ServiceRadar Core through its public gRPC API: cluster status, pollers and
agents, result batches and stored results, and the edge calls a poller makes. Commands read
'srctl NOUN VERB [flags]'; global flags may come before or after the noun and verb."""

EPILOG = f"""\
connection:
  Flags win over environment variables: SRCTL_SERVER, SRCTL_CACERT, SRCTL_CERT, SRCTL_KEY,
  SRCTL_DATA_DIR, SRCTL_TOKEN. With --data-dir DIR, DIR/pki/ca.pem verifies the server and
  DIR/pki/operator.pem (edge commands: edge-default-demo.pem) with its -key.pem is the client
  certificate, for whichever of --cacert/--cert/--key is not given. Environment variables
  win over the saved context (--context NAME, SRCTL_CONTEXT, else the current one; see
  `srctl context`). A token alone needs the core's token port (admin_listen) and --cacert.

output:
  -o table (default) is for people. -o json and -o yaml print the RPC response in the proto3
  JSON mapping with proto field names, e.g. {{"pollers": [...]}} with every page merged;
  enum values are full names (POLLER_STATE_HEALTHY) and timestamps RFC 3339.

{EXIT_CODES_HELP}

examples:
  srctl --data-dir ./data cluster status
  srctl pollers list --state degraded -o json
  srctl pollers get demo --server core.example.net:50051 --token "$TOKEN"
  srctl edge health --poller demo --register --partition dc1 --count 3
  srctl edge push --synthetic-hosts 5000 --partition dc1
  srctl batches list --state open
  srctl checks create gw --partition dc1 --type icmp --target 10.0.0.1
  srctl assignments list --state pending
  srctl edge sync-config --poller demo --watch"""


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    # Global flags live in a parent shared by every level, so `srctl -o json pollers list`
    # and `srctl pollers list -o json` both work; see add_connection_flags on defaults.
    common = argparse.ArgumentParser(add_help=False)
    add_connection_flags(common)
    contexts.add_context_flag(common)
    common.add_argument(
        "-o",
        "--output",
        choices=[f.value for f in Format],
        default=argparse.SUPPRESS,
        help="output format (default: table)",
    )
    parser = argparse.ArgumentParser(
        prog="srctl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")
    for module in (
        cluster,
        pollers,
        events,
        edge,
        batches,
        results,
        tenants,
        partitions,
        tokens,
        packages,
        audit,
        checks,
        sweeps,
        sources,
        assignments,
        stats,
        templates,
        alerts,
        notifiers,
        devices,
        contexts,
    ):
        module.register(nouns, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run srctl with `argv` (default: the process arguments) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse exits 0 after --help and 2 on a usage error; return it so callers and tests
        # get the code rather than an exception.
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    out = make_console()
    err = make_console(stderr=True)
    ctx = Context(
        args=args,
        env=os.environ,
        printer=Printer(Format(getattr(args, "output", Format.TABLE)), out),
        err=err,
    )
    handler: Handler = args.handler
    try:
        return handler(args, ctx)
    except grpc.RpcError as error:
        return report_rpc_error(error, sys.stderr)
    except UsageError as error:
        return report_usage_error(error, sys.stderr)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
