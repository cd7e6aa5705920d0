"""Exit codes scripts can rely on, and how failures are reported on stderr."""

from __future__ import annotations

import enum
from typing import TextIO

import grpc


class ExitCode(enum.IntEnum):
    """Process exit status of srctl; listed in `srctl --help`."""

    OK = 0
    # The server answered with an error status not covered by a more specific code below.
    SERVER_ERROR = 1
    # argparse exits with 2 on bad usage; missing certificate files are usage errors too.
    USAGE = 2
    UNREACHABLE = 3
    NOT_FOUND = 4
    DENIED = 5
    # What shells report for a process ended by SIGINT.
    INTERRUPTED = 130


_EXIT_BY_STATUS: dict[grpc.StatusCode, ExitCode] = {
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNREACHABLE,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.DENIED,
}

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  the server answered with an error status (INVALID_ARGUMENT, FAILED_PRECONDITION, ...)
  2  usage error: bad arguments, missing certificate or key file
  3  could not reach the server (UNAVAILABLE, DEADLINE_EXCEEDED)
  4  not found (NOT_FOUND)
  5  not allowed (UNAUTHENTICATED, PERMISSION_DENIED)"""


class UsageError(Exception):
    """A mistake in how srctl was invoked that argparse cannot see (e.g. a missing file)."""


def exit_code_for(code: grpc.StatusCode) -> ExitCode:
    """The exit code for a call that ended with gRPC status `code`."""
    return _EXIT_BY_STATUS.get(code, ExitCode.SERVER_ERROR)


def report_rpc_error(error: grpc.RpcError, stream: TextIO) -> ExitCode:
    """Print `Error: <STATUS>: <details>` for a failed call and return its exit code."""
    # The base RpcError carries no status at runtime; every error a call raises is also a
    # grpc.Call, but guard so a bare RpcError still yields a message rather than a traceback.
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    print(f"Error: {code.name}: {details or 'no details'}", file=stream)
    return exit_code_for(code)


def report_usage_error(error: UsageError, stream: TextIO) -> ExitCode:
    """Print a usage error the way argparse would and return the usage exit code."""
    print(f"srctl: error: {error}", file=stream)
    return ExitCode.USAGE
