"""The event settings, validated once and gathered for the outbox, the relay and the watchers.

Imports nothing heavy: `Settings.validate` calls `EventConfig.from_settings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from srcore.domain.errors import InvalidArgument

if TYPE_CHECKING:
    from srcore.settings import Settings

# A subject token the core writes: no wildcards, no dots, no whitespace.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,63}")
# JetStream stream names may not contain '.', '*', '>', whitespace or path separators.
_STREAM = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MAX_PREFIX_TOKENS = 8
ENCODINGS = ("protobuf", "json")


@dataclass(frozen=True, slots=True)
class EventConfig:
    """How events are kept, relayed and streamed (see docs/events.md for each knob)."""

    nats_url: str
    stream: str
    prefix: str
    encoding: str
    max_age: float
    max_bytes: int
    max_msgs: int
    duplicate_window: float
    outbox_retention: float
    batch_size: int
    max_in_flight: int
    publish_timeout: float
    poll_interval: float

    @classmethod
    def from_settings(cls, settings: Settings) -> EventConfig:
        """The event settings of `settings`, or InvalidArgument naming the bad setting."""
        prefix_tokens = settings.events_subject_prefix.split(".")
        if len(prefix_tokens) > _MAX_PREFIX_TOKENS or not all(TOKEN.fullmatch(t) for t in prefix_tokens):
            raise InvalidArgument(
                "events_subject_prefix", "must be 1-8 dot-separated tokens of [A-Za-z0-9_-], e.g. sr.infra"
            )
        if not _STREAM.fullmatch(settings.nats_stream):
            raise InvalidArgument("nats_stream", "must be 1-32 characters of [A-Za-z0-9_-]")
        if settings.events_encoding not in ENCODINGS:
            raise InvalidArgument("events_encoding", f"must be one of {', '.join(ENCODINGS)}")
        for name in ("events_max_age", "events_outbox_retention"):
            if getattr(settings, name) < 0:
                raise InvalidArgument(name, "must be 0 (no limit) or positive")
        for name in ("events_duplicate_window", "events_publish_timeout", "events_poll_interval"):
            if getattr(settings, name) <= 0:
                raise InvalidArgument(name, "must be positive")
        for name in ("events_max_bytes", "events_max_msgs"):
            if getattr(settings, name) < -1 or getattr(settings, name) == 0:
                raise InvalidArgument(name, "must be -1 (no limit) or positive")
        if settings.events_max_age and settings.events_duplicate_window > settings.events_max_age:
            raise InvalidArgument("events_duplicate_window", "must not be longer than events_max_age")
        if settings.events_relay_batch_size < 1:
            raise InvalidArgument("events_relay_batch_size", "must be at least 1")
        if settings.events_relay_max_in_flight < 1:
            raise InvalidArgument("events_relay_max_in_flight", "must be at least 1")
        return cls(
            nats_url=settings.nats_url,
            stream=settings.nats_stream,
            prefix=settings.events_subject_prefix,
            encoding=settings.events_encoding,
            max_age=settings.events_max_age,
            max_bytes=settings.events_max_bytes,
            max_msgs=settings.events_max_msgs,
            duplicate_window=settings.events_duplicate_window,
            outbox_retention=settings.events_outbox_retention,
            batch_size=settings.events_relay_batch_size,
            max_in_flight=settings.events_relay_max_in_flight,
            publish_timeout=settings.events_publish_timeout,
            poll_interval=settings.events_poll_interval,
        )
