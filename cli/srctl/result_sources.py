"""Where `srctl edge push` gets results: JSON Lines files and a synthetic sweep generator.

Both are lazy iterators, so a push of millions of results holds only the credit window in
memory, and both are deterministic, so a second run over the same input regenerates the same
chunks and can resume a batch an earlier run left half-committed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from serviceradar.edge.v1 import results_pb2 as pb
from srctl.ingest_client import InputError
from srctl.output import enum_choices, parse_enum

# The message one JSON line holds, per result type.
RESULT_MESSAGES: dict[pb.ResultType.ValueType, type[Message]] = {
    pb.RESULT_TYPE_SWEEP_HOSTS: pb.SweepHostResult,
    pb.RESULT_TYPE_SERVICE_CHECKS: pb.ServiceCheckResult,
    pb.RESULT_TYPE_DEVICE_UPDATES: pb.DeviceUpdate,
}

# Hosts of 10.0.0.0/8 the generator numbers 10.0.0.1 upwards.
MAX_SYNTHETIC_HOSTS = 2**24 - 2
SYNTHETIC_NETWORK = "10.0.0.0/8"
_PROBED_PORTS = ((22, "ssh"), (80, "http"), (443, "https"), (3389, "rdp"), (8080, "http-alt"))


def type_names() -> list[str]:
    """Result types as srctl spells them on the command line: sweep-hosts, service-checks, ..."""
    return [name.replace("_", "-") for name in enum_choices(pb.ResultType)]


def parse_type(name: str) -> pb.ResultType.ValueType:
    """A result type from its command-line name (inverse of `type_names`); ValueError if unknown."""
    return parse_enum(pb.ResultType, name.replace("-", "_"))


def completion_names() -> list[str]:
    """Sweep completions as srctl spells them: in-progress, completed, failed, cancelled."""
    return [name.replace("_", "-") for name in enum_choices(pb.SweepCompletion)]


def parse_completion(name: str) -> pb.SweepCompletion.ValueType:
    """A sweep completion from its command-line name; ValueError if unknown."""
    return parse_enum(pb.SweepCompletion, name.replace("-", "_"))


def read_jsonl(lines: Iterable[str], message_type: type[Message], source: str) -> Iterator[Message]:
    """Parse each non-blank line as `message_type` in the proto3 JSON mapping, one at a time.

    Unknown fields are an error, so a misspelt field name does not silently drop data.
    Raises InputError naming `source` and the line number.
    """
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json_format.Parse(line, message_type())
            except json_format.ParseError as error:
                raise InputError(f"{source}:{number}: {error}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{source}:{number + 1}: not UTF-8 text ({error.reason})") from None


def count_results(stream: TextIO, source: str) -> int:
    """The non-blank lines of `stream`, read through once without parsing (for progress).

    Raises InputError when `source` is not UTF-8 text.
    """
    try:
        return sum(1 for line in stream if line.strip())
    except UnicodeDecodeError as error:
        raise InputError(f"{source}: not UTF-8 text ({error.reason})") from None


def synthetic_hosts(count: int, seed: int = 1) -> Iterator[pb.SweepHostResult]:
    """`count` sweep results for 10.0.0.1, 10.0.0.2, ...: the same sequence for the same seed.

    About four in five hosts answer, with an ICMP round trip of a few milliseconds and some of
    ports 22, 80, 443, 3389 and 8080 open; the others answer nothing.
    """
    if not 0 <= count <= MAX_SYNTHETIC_HOSTS:
        raise ValueError(f"count must be 0-{MAX_SYNTHETIC_HOSTS}, got {count}")
    rng = random.Random(seed)
    for number in range(1, count + 1):
        octets = (number >> 16 & 0xFF, number >> 8 & 0xFF, number & 0xFF)
        host = pb.SweepHostResult(
            ip="10.{}.{}.{}".format(*octets),
            mac="02:00:0a:{:02x}:{:02x}:{:02x}".format(*octets),
            hostname=f"host-{number}",
            available=rng.random() < 0.8,
        )
        if host.available:
            # Log-normal: most round trips are short, a few are long, as on a real network.
            host.icmp_rtt.FromMicroseconds(int(rng.lognormvariate(7.5, 0.8)))
            host.icmp_packet_loss = 0.0 if rng.random() < 0.9 else 0.25
            for port, service in _PROBED_PORTS:
                if rng.random() < 0.3:
                    result = host.ports.add(port=port, open=True, service=service)
                    result.response_time.FromMicroseconds(int(rng.lognormvariate(7.0, 0.6)))
        else:
            host.icmp_packet_loss = 1.0
        yield host
