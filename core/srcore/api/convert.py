"""Small conversions between protobuf well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import duration_pb2, timestamp_pb2


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime; None stays None (the field stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration of `seconds` (may be negative), at microsecond precision."""
    value = duration_pb2.Duration()
    value.FromMicroseconds(round(seconds * 1_000_000))
    return value


def from_timestamp(value: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime from a Timestamp."""
    return value.ToDatetime(tzinfo=UTC)
