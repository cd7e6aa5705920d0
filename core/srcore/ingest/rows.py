"""Turn a chunk's protobuf results into row tuples, validating each result once.

This is the hottest Python in the core: one pass per result, C-level checks where they
exist (inet_pton, compiled regexes), no intermediate objects per result, and rejected
results counted with the first reason instead of failing the chunk.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serviceradar.edge.v1 import results_pb2

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_fromtimestamp = datetime.fromtimestamp


@dataclass(slots=True)
class Tally:
    """Accepted and rejected results of one chunk, with the first rejection's reason."""

    accepted: int = 0
    rejected: int = 0
    first_reject: str = ""

    def reject(self, reason: str) -> None:
        """Count a rejected result, keeping the first reason."""
        self.rejected += 1
        if not self.first_reject:
            self.first_reject = reason[:500]


@dataclass(slots=True)
class ChunkOrigin:
    """Where a chunk's rows come from; the leading columns of every row."""

    tenant: str
    partition: str
    poller_id: str
    agent_id: str
    batch_id: str
    chunk_index: int
    flush_id: int
    execution_id: str = ""

    @property
    def prefix(self) -> tuple[Any, ...]:
        """The leading columns up to chunk_index, shared by every row of the chunk."""
        return (self.tenant, self.partition, self.poller_id, self.agent_id, self.batch_id, self.chunk_index)


class InvalidResult(ValueError):
    """One result failed validation; the message names the field."""


def canonical_ip(value: str) -> str:
    """The address in canonical text form; IPv6 is normalised (compressed, lower case)."""
    if not value:
        raise InvalidResult("ip: required")
    try:
        if ":" in value:
            return _inet_ntop(_AF_INET6, _inet_pton(_AF_INET6, value))
        _inet_pton(_AF_INET, value)
    except OSError:
        raise InvalidResult(f"ip: {value[:64]!r} is not an IP address") from None
    return value


def canonical_mac(value: str) -> str:
    """Lower-case, colon-separated MAC; empty stays empty."""
    if not value:
        return ""
    if not _MAC.fullmatch(value):
        raise InvalidResult(f"mac: {value[:64]!r} is not a MAC address")
    return value.lower().replace("-", ":")


def _text(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidResult(f"{name}: longer than {limit} characters")
    return value


def timestamp_of(stamp: Any, default: Any, encode: Callable[[datetime], Any]) -> Any:
    """The encoded observation time: the result's own, or the chunk's default."""
    seconds = stamp.seconds
    if not seconds and not stamp.nanos:
        return default
    return encode(_fromtimestamp(seconds + stamp.nanos / 1e9, UTC))


def _micros(duration: Any) -> int:
    return int(duration.seconds * 1_000_000 + duration.nanos // 1000)


def sweep_rows(
    results: Any, origin: ChunkOrigin, observed: Any, received: Any,
    encode: Callable[[datetime], Any], out: list[tuple[Any, ...]], tally: Tally,
) -> None:  # fmt: skip
    """Append one row per valid SweepHostResult to `out`.

    Written flat on purpose: each protobuf field is read once, checks are C calls, and the
    common case (valid, IPv4, no own timestamp) takes no branch that allocates.
    """
    prefix = origin.prefix
    flush_id = origin.flush_id
    execution_id = origin.execution_id
    append = out.append
    mac_ok = _MAC.fullmatch
    for seq, r in enumerate(results):
        ip = r.ip
        try:
            if ":" in ip:
                ip = _inet_ntop(_AF_INET6, _inet_pton(_AF_INET6, ip))
            else:
                _inet_pton(_AF_INET, ip)
        except (OSError, ValueError):
            tally.reject(
                f"results[{seq}].ip: {ip[:64]!r} is not an IP address"
                if ip
                else f"results[{seq}].ip: required"
            )
            continue
        mac = r.mac
        if mac:
            if mac_ok(mac) is None:
                tally.reject(f"results[{seq}].mac: {mac[:64]!r} is not a MAC address")
                continue
            mac = mac.lower().replace("-", ":")
        hostname = r.hostname
        if len(hostname) > 255:
            tally.reject(f"results[{seq}].hostname: longer than 255 characters")
            continue
        loss = r.icmp_packet_loss
        if not 0.0 <= loss <= 1.0:
            tally.reject(f"results[{seq}].icmp_packet_loss: must be between 0 and 1")
            continue
        rtt = r.icmp_rtt
        rtt_us = rtt.seconds * 1_000_000 + rtt.nanos // 1000 or None
        ports_text = ""
        fastest = None
        ports = r.ports
        if ports:
            open_ports = []
            bad = 0
            for p in ports:
                number = p.port
                if not 0 < number < 65536:
                    bad = number or -1
                    break
                if p.open:
                    open_ports.append(number)
                    took = p.response_time
                    took_us = took.seconds * 1_000_000 + took.nanos // 1000
                    if took_us and (fastest is None or took_us < fastest):
                        fastest = took_us
            if bad:
                tally.reject(f"results[{seq}].ports[].port: {max(bad, 0)} is not a TCP port")
                continue
            if open_ports:
                open_ports.sort()
                ports_text = ",".join(map(str, open_ports))
        # Most results carry no time of their own: HasField is cheaper than reading the field.
        when = observed
        if r.HasField("observed_at"):
            seen = r.observed_at
            if seen.seconds or seen.nanos:
                when = encode(_fromtimestamp(seen.seconds + seen.nanos / 1e9, UTC))
        append((*prefix, seq, flush_id, execution_id, ip, mac, hostname, r.available, rtt_us, loss,
                ports_text, when, received, fastest))  # fmt: skip
    tally.accepted += len(results) - tally.rejected


def check_rows(
    results: Any, origin: ChunkOrigin, observed: Any, received: Any,
    encode: Callable[[datetime], Any], out: list[tuple[Any, ...]], tally: Tally,
) -> None:  # fmt: skip
    """Append one row per valid ServiceCheckResult to `out`."""
    prefix_base = origin.prefix[:3]
    rest = origin.prefix[4:]
    flush_id = origin.flush_id
    append = out.append
    for seq, r in enumerate(results):
        try:
            name = r.name
            if not name:
                raise InvalidResult("name: required")
            _text("name", name, 255)
            _text("check_type", r.check_type, 32)
            _text("message", r.message, 4096)
            _text("check_id", r.check_id, 128)
            agent = _text("agent_id", r.agent_id, 128) or origin.agent_id
            response = _micros(r.response_time) if r.HasField("response_time") else None
            when = timestamp_of(r.observed_at, observed, encode)
        except InvalidResult as exc:
            tally.reject(f"results[{seq}].{exc}")
            continue
        append((*prefix_base, agent, *rest, seq, flush_id, r.check_id, name, r.check_type, r.available,
                response, r.message, when, received))  # fmt: skip
    tally.accepted += len(results) - tally.rejected


def device_rows(
    results: Any, origin: ChunkOrigin, observed: Any, received: Any,
    encode: Callable[[datetime], Any], out: list[tuple[Any, ...]], tally: Tally,
) -> None:  # fmt: skip
    """Append one row per valid DeviceUpdate to `out`."""
    prefix = origin.prefix
    flush_id = origin.flush_id
    append = out.append
    dumps = json.dumps
    for seq, r in enumerate(results):
        try:
            ip = canonical_ip(r.ip) if r.ip else ""
            mac = canonical_mac(r.mac)
            external_ids = dict(r.external_ids)
            if not (ip or mac or external_ids):
                raise InvalidResult("ip: a device update needs an ip, a mac or an external id")
            _text("hostname", r.hostname, 255)
            _text("source", r.source, 64)
            if len(r.metadata) > 64:
                raise InvalidResult("metadata: more than 64 entries")
            when = timestamp_of(r.observed_at, observed, encode)
        except InvalidResult as exc:
            tally.reject(f"results[{seq}].{exc}")
            continue
        append((*prefix, seq, flush_id, r.source, ip, mac, r.hostname, dumps(external_ids, sort_keys=True),
                r.available, dumps(dict(r.metadata), sort_keys=True), when, received))  # fmt: skip
    tally.accepted += len(results) - tally.rejected


def payload_results(chunk: results_pb2.ResultChunk) -> Any:
    """The repeated results of a chunk, whatever its payload case."""
    case = chunk.WhichOneof("payload")
    if case is None:
        return ()
    return getattr(chunk, case).results
