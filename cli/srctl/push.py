"""`srctl edge push`: stream results to ReportResults the way an edge core must.

A thin command around `srctl.ingest_client.ResultPusher`, the reference client that
docs/protocol.md describes: results come lazily from a JSON Lines file or the synthetic sweep
generator, progress goes to stderr, and the summary to stdout in the -o format.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import math
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.message import Message
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from serviceradar.edge.v1 import results_pb2 as pb
from srctl.argtypes import int_between, seconds
from srctl.command import Context, add_verb
from srctl.connection import ConnectionSettings, Role, resolve_settings
from srctl.contextfile import with_context
from srctl.errors import ExitCode, UsageError
from srctl.ingest_client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_RESULTS_PER_CHUNK,
    BatchProgress,
    InputError,
    ProgressCallback,
    PushFailed,
    ResultPusher,
    RetryPolicy,
    build_chunks,
)
from srctl.output import NONE, Format, dump, short_enum
from srctl.result_sources import (
    MAX_SYNTHETIC_HOSTS,
    RESULT_MESSAGES,
    completion_names,
    count_results,
    parse_completion,
    parse_type,
    read_jsonl,
    synthetic_hosts,
    type_names,
)

# Keepalive a long push needs through NAT and load balancers; the server permits pings this
# often (see docs/protocol.md, "Keepalive").
KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def batch_uuid(text: str) -> str:
    """A batch id: a UUID, in its canonical lower-case form."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def cidr(text: str) -> str:
    """A network in CIDR notation (host bits allowed), normalised."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a network in CIDR notation: {text!r}") from None


def batch_open(args: argparse.Namespace, result_type: pb.ResultType.ValueType, expected: int) -> pb.BatchOpen:
    """The BatchOpen the push flags describe; sweep batches get a SweepInfo."""
    opened = pb.BatchOpen(
        batch_id=args.batch_id,
        result_type=result_type,
        agent_id=args.agent,
        partition=args.partition,
        expected_chunks=expected,
    )
    if result_type == pb.RESULT_TYPE_SWEEP_HOSTS:
        opened.sweep.CopyFrom(
            pb.SweepInfo(
                execution_id=args.execution_id or str(uuid.uuid4()),
                sweep_id=args.sweep_id,
                target_network=args.target_network or "",
            )
        )
    return opened


def summary(progress: BatchProgress) -> dict[str, Any]:
    """The outcome of a push as a document: the -o json/yaml output."""
    return {
        "batch_id": progress.batch_id,
        "result_type": pb.ResultType.Name(progress.result_type),
        "state": pb.BatchState.Name(progress.state),
        "committed_index": progress.committed_index,
        "expected_chunks": progress.expected_chunks,
        "chunks_sent": progress.chunks_sent,
        "accepted": progress.accepted,
        "rejected": progress.rejected,
        "first_reject": progress.first_reject,
        "retries": progress.retries,
        "resumed_from": progress.resumed_from,
        "elapsed_seconds": round(progress.elapsed, 3),
        "results_per_second": round(progress.results_per_second, 1),
    }


def summary_rows(progress: BatchProgress) -> list[tuple[str, str]]:
    """The outcome of a push for people, as key/value lines."""
    expected = str(progress.expected_chunks) if progress.expected_chunks else "?"
    chunks = f"{progress.committed_index + 1}/{expected} committed"
    if progress.resumed_from:
        chunks += f" (resumed from chunk {progress.resumed_from})"
    return [
        ("Batch", progress.batch_id),
        ("Type", short_enum(pb.ResultType.DESCRIPTOR, progress.result_type).replace("_", "-")),
        ("State", short_enum(pb.BatchState.DESCRIPTOR, progress.state)),
        ("Chunks", chunks),
        ("Accepted", str(progress.accepted)),
        ("Rejected", str(progress.rejected)),
        ("First reject", progress.first_reject or NONE),
        ("Retries", str(progress.retries)),
        ("Elapsed", f"{progress.elapsed:.1f}s ({progress.results_per_second:,.0f} results/s)"),
    ]


def _show_summary(ctx: Context, progress: BatchProgress) -> None:
    console = ctx.printer.console
    if ctx.printer.fmt is not Format.TABLE:
        # Straight to the file, as Printer does: rich would wrap and colour the document.
        console.file.write(dump(summary(progress), ctx.printer.fmt))
        console.file.flush()
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in summary_rows(progress):
        grid.add_row(Text(key + ":"), Text(value))
    with console.capture() as capture:
        console.print(grid)
    # Grid cells are padded to the column width; trailing blanks only get in the way of diff.
    console.file.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))
    console.file.flush()


def _read_file(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def aio_channel(settings: ConnectionSettings) -> grpc.aio.Channel:
    """An asyncio channel for `settings`; call inside the event loop that will use it."""
    options: list[tuple[str, str | int]] = [("grpc.primary_user_agent", "srctl"), *KEEPALIVE_OPTIONS]
    if settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    if settings.plaintext:
        return grpc.aio.insecure_channel(settings.server, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_file(settings.cacert),
        private_key=_read_file(settings.key),
        certificate_chain=_read_file(settings.cert),
    )
    return grpc.aio.secure_channel(settings.server, credentials, options=options)


async def push_batch(
    settings: ConnectionSettings,
    batch: pb.BatchOpen,
    chunks: Iterator[pb.ResultChunk],
    policy: RetryPolicy,
    on_progress: ProgressCallback | None = None,
) -> BatchProgress:
    """Connect with `settings` and push one batch; see ResultPusher.push."""
    async with aio_channel(settings) as channel, ResultPusher.over(channel, policy) as pusher:
        return await pusher.push(batch, chunks, on_progress)


def _results(
    args: argparse.Namespace, result_type: pb.ResultType.ValueType, stream: TextIO | None
) -> Iterator[Message]:
    if stream is None:
        return synthetic_hosts(args.synthetic_hosts, args.seed)
    name = "<stdin>" if args.file == "-" else args.file
    return read_jsonl(stream, RESULT_MESSAGES[result_type], name)


def _resolve_type(args: argparse.Namespace) -> pb.ResultType.ValueType:
    if args.synthetic_hosts is not None:
        if args.type not in (None, "sweep-hosts"):
            raise UsageError("--synthetic-hosts makes sweep-hosts results; drop --type or use --file")
        return pb.RESULT_TYPE_SWEEP_HOSTS
    if args.type is None:
        raise UsageError("--type is required with --file")
    result_type = parse_type(args.type)
    sweep_flags = (args.execution_id, args.sweep_id, args.target_network, args.completion)
    if result_type != pb.RESULT_TYPE_SWEEP_HOSTS and any(sweep_flags):
        raise UsageError("--execution-id, --sweep-id, --target-network and --completion are for sweep-hosts")
    return result_type


@contextlib.contextmanager
def _open_input(args: argparse.Namespace) -> Iterator[tuple[TextIO | None, int | None]]:
    """The input stream (None for synthetic results) and the number of results, None if unknown."""
    if args.synthetic_hosts is not None:
        yield None, args.synthetic_hosts
        return
    if args.file == "-":
        yield sys.stdin, None
        return
    try:
        stream = open(args.file, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    with stream:
        total = count_results(stream, args.file)
        stream.seek(0)
        yield stream, total


def _push(args: argparse.Namespace, ctx: Context) -> int:
    try:
        return _push_input(args, ctx)
    except InputError as error:
        raise UsageError(str(error)) from None


def _push_input(args: argparse.Namespace, ctx: Context) -> int:
    result_type = _resolve_type(args)
    # The same resolution as Context.connect (flags, environment, --context), for asyncio.
    settings = resolve_settings(args, with_context(args, ctx.env), Role.EDGE)
    args.batch_id = args.batch_id or str(uuid.uuid4())
    policy = RetryPolicy(
        max_retries=args.max_retries,
        deadline=args.deadline or None,
        ack_timeout=args.ack_timeout,
    )
    completion = pb.SWEEP_COMPLETION_UNSPECIFIED
    if result_type == pb.RESULT_TYPE_SWEEP_HOSTS:
        completion = parse_completion(args.completion or "completed")
    # On stderr at once, so a push that is interrupted can be resumed with this id.
    ctx.err.print(Text(f"pushing batch {args.batch_id}"), soft_wrap=True)
    with _open_input(args) as (stream, total):
        # Even an empty batch is one (empty, final) chunk; 0 tells the server "unknown".
        expected = 0 if total is None else max(1, math.ceil(total / args.chunk_size))
        batch = batch_open(args, result_type, expected)
        results = _results(args, result_type, stream)
        chunks = build_chunks(
            results,
            batch_id=args.batch_id,
            result_type=result_type,
            chunk_size=args.chunk_size,
            completion=completion,
            max_message_bytes=args.max_message_bytes,
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks  {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=ctx.err,
            transient=True,
            # A progress line on a pipe or a log file is noise.
            disable=not ctx.err.is_terminal,
        ) as bar:
            task = bar.add_task("committed", total=expected or None, rate="")

            def on_progress(progress: BatchProgress) -> None:
                described = "committed"
                if progress.retry_in:
                    described = (
                        f"retry {progress.retries} in {progress.retry_in:.1f}s ({progress.last_error})"
                    )
                bar.update(
                    task,
                    completed=progress.committed_index + 1,
                    description=described,
                    rate=f"{progress.results_per_second:,.0f} results/s",
                )

            try:
                done = asyncio.run(push_batch(settings, batch, chunks, policy, on_progress))
            except PushFailed as failure:
                _resume_hint(ctx, failure.progress)
                raise
    _show_summary(ctx, done)
    return ExitCode.OK


def _resume_hint(ctx: Context, progress: BatchProgress) -> None:
    if progress.state == pb.BATCH_STATE_OPEN and progress.committed_index >= 0:
        ctx.err.print(
            Text(
                f"batch {progress.batch_id}: chunks 0-{progress.committed_index} are committed; run "
                f"the same push with --batch-id {progress.batch_id} to resume"
            ),
            soft_wrap=True,
        )


def register_push(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `edge push`."""
    parser = add_verb(
        verbs,
        "push",
        summary="stream results to ReportResults (the reference client)",
        description=(
            "Stream one batch of results to ReportResults in numbered chunks, as an edge core\n"
            "does: honour the server's credits, wait out RESOURCE_EXHAUSTED for its RetryInfo\n"
            "delay, back off with jitter on UNAVAILABLE, and after any disconnect reopen the\n"
            "batch and resume after the last committed chunk (docs/protocol.md).\n"
            "\n"
            "Results come from a JSON Lines file (one SweepHostResult, ServiceCheckResult or\n"
            "DeviceUpdate per line in the proto3 JSON mapping; '-' reads stdin) or from a\n"
            "deterministic synthetic sweep of 10.0.0.1 upwards. Rejected results are counted\n"
            "and shown, not an error. A push that was interrupted resumes when run again with\n"
            "its --batch-id and the same input and --chunk-size; a committed batch is not sent\n"
            "twice. The summary goes to stdout, progress to stderr."
        ),
        examples=(
            "  srctl edge push --data-dir ./data --synthetic-hosts 5000 --partition dc1\n"
            "  srctl edge push --type service-checks --file checks.jsonl --agent agent-1\n"
            "  srctl edge push --type sweep-hosts --file sweep.jsonl --target-network 10.1.0.0/16 \\\n"
            "      --execution-id 0d6e... --completion completed -o json\n"
            "  srctl edge push --synthetic-hosts 100000 --batch-id 5f2c...   # resume an earlier run"
        ),
        handler=_push,
        common=common,
    )
    source = parser.add_argument_group("results")
    inputs = source.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--file", metavar="PATH", help="JSON Lines file of results ('-' for stdin)")
    inputs.add_argument(
        "--synthetic-hosts",
        metavar="N",
        type=int_between(0, MAX_SYNTHETIC_HOSTS),
        help="generate N sweep host results instead of reading a file",
    )
    source.add_argument(
        "--type",
        choices=type_names(),
        help="result type of the file (--synthetic-hosts implies sweep-hosts)",
    )
    source.add_argument("--seed", type=int, default=1, help="seed of the synthetic generator (default 1)")

    batch = parser.add_argument_group("batch")
    batch.add_argument(
        "--batch-id",
        metavar="UUID",
        type=batch_uuid,
        help="batch id; reuse one to resume its batch (default: a new UUID)",
    )
    batch.add_argument(
        "--chunk-size",
        metavar="N",
        type=int_between(1, MAX_RESULTS_PER_CHUNK),
        default=500,
        help=f"results per chunk, 1-{MAX_RESULTS_PER_CHUNK} (default 500)",
    )
    batch.add_argument(
        "--partition",
        required=True,
        help="partition (network segment) the results were observed in; IP addresses mean "
        "something only within one",
    )
    batch.add_argument("--agent", metavar="A", default="", help="agent that produced the results")
    batch.add_argument(
        "--max-message-bytes",
        metavar="N",
        type=int_between(4096),
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="the server's message size limit; larger chunks are cut smaller (default 4 MiB)",
    )

    sweep = parser.add_argument_group("sweep (sweep-hosts only)")
    sweep.add_argument("--execution-id", metavar="E", help="sweep execution id (default: a new UUID)")
    sweep.add_argument("--sweep-id", metavar="S", default="", help="sweep group id from the configuration")
    sweep.add_argument("--target-network", metavar="CIDR", type=cidr, help="network the sweep covered")
    sweep.add_argument(
        "--completion",
        choices=completion_names(),
        help="how the sweep ended, sent on the final chunk (default: completed)",
    )

    retry = parser.add_argument_group("retries")
    retry.add_argument(
        "--max-retries",
        metavar="N",
        type=int_between(0),
        default=10,
        help="give up after N failed attempts in a row that commit nothing (default 10)",
    )
    retry.add_argument(
        "--deadline",
        metavar="SECONDS",
        type=seconds(allow_zero=True),
        default=0.0,
        help="give up when the batch is not committed within SECONDS (default 0: no limit)",
    )
    retry.add_argument(
        "--ack-timeout",
        metavar="SECONDS",
        type=seconds(allow_zero=False),
        default=60.0,
        help="reconnect when chunks in flight get no ack for SECONDS (default 60)",
    )
