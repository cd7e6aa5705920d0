"""The event schema: an Event from a state transition, its subject and its wire encodings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf import json_format

from serviceradar.events.v1 import event_pb2
from srcore.domain.model import Transition
from srcore.events.config import TOKEN

Event = event_pb2.Event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PROTOBUF_CONTENT_TYPE = "application/protobuf; proto=serviceradar.events.v1.Event"
JSON_CONTENT_TYPE = "application/json"


def subject_token(what: str, value: str) -> str:
    """`value` when it can stand as one subject token; ValueError otherwise.

    Tenants are slugs and entity types and states are fixed names in the code, so a bad
    token is a bug: failing the transaction beats publishing to a subject no consumer expects.
    """
    if not TOKEN.fullmatch(value):
        raise ValueError(f"{what} {value!r} cannot be a NATS subject token")
    return value


def relative_subject(tenant: str, entity_type: str, event_type: str) -> str:
    """`<tenant>.<entity_type>.<event_type>`: the subject below the configured prefix."""
    return ".".join(
        (
            subject_token("tenant", tenant),
            subject_token("entity type", entity_type),
            subject_token("event type", event_type),
        )
    )


def full_subject(prefix: str, relative: str) -> str:
    """The subject an event is published on, e.g. `sr.infra.acme.poller.offline`."""
    return f"{prefix}.{relative}"


def tenant_filter(prefix: str, tenant: str) -> str:
    """The subject filter that matches exactly one tenant's events."""
    return f"{prefix}.{subject_token('tenant', tenant)}.>"


def entity_key(entity_type: str, entity_id: str) -> str:
    """How the outbox keys one entity's history."""
    return f"{entity_type}:{entity_id}"


def event_from_transition(
    transition: Transition,
    partition: str,
    replica_id: str,
    fencing_token: int,
    event_id: uuid.UUID,
) -> Event:
    """The event recording `transition`; its type is the new state."""
    event = Event(
        id=str(event_id),
        type=transition.to_state,
        entity_type=transition.entity_type,
        entity_id=transition.entity_id,
        tenant=transition.tenant,
        partition=partition,
        old_state=transition.from_state,
        new_state=transition.to_state,
        reason=transition.reason,
        replica=replica_id,
        fencing_token=fencing_token,
    )
    # Timestamp.FromDatetime goes through calendar.timegm, a tenth of the cost of writing an
    # event; timedelta arithmetic gives the same value. A naive time is UTC, as in the store.
    at = transition.at if transition.at.tzinfo is not None else transition.at.replace(tzinfo=UTC)
    since_epoch = at - _EPOCH
    event.time.seconds = since_epoch.days * 86_400 + since_epoch.seconds
    event.time.nanos = since_epoch.microseconds * 1000
    return event


def encode(payload: bytes, encoding: str) -> tuple[bytes, str]:
    """The message body and Content-Type for a stored (protobuf) payload in `encoding`."""
    if encoding == "json":
        event = Event.FromString(payload)
        body = json_format.MessageToJson(event, preserving_proto_field_name=True, indent=None)
        return body.encode(), JSON_CONTENT_TYPE
    return payload, PROTOBUF_CONTENT_TYPE
