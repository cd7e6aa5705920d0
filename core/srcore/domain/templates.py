"""Checker templates: validation of a body (format, well-formedness, schema, size) and the
versioning rules, including how an edge's default meets an operator's version.

Pure: the store persists versions, the api adapts requests; both call these rules.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from srcore.domain.errors import InvalidArgument

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_CHECKER_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_PREFIX = 128
# Defaults one edge may register in one call.
MAX_EDGE_TEMPLATES = 100


class TemplateFormat(enum.StrEnum):
    """How a body is written."""

    JSON = "json"
    TOML = "toml"


class TemplateSource(enum.StrEnum):
    """Who registered a version."""

    EDGE = "edge"
    OPERATOR = "operator"


class Outcome(enum.StrEnum):
    """What registering a body did."""

    CREATED = "created"
    UNCHANGED = "unchanged"
    # An edge default met a version an operator registered, and left it alone.
    OPERATOR_KEPT = "operator-kept"


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A validated body to register under a name."""

    name: str
    checker_type: str
    format: TemplateFormat
    body: str

    @property
    def digest(self) -> str:
        """SHA-256 over type, format and body: equal digests mean an identical registration."""
        material = f"{self.checker_type}\n{self.format.value}\n{self.body}".encode()
        return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One stored version of a template."""

    tenant: str
    name: str
    checker_type: str
    format: TemplateFormat
    body: str
    version: int
    digest: str
    source: TemplateSource
    registered_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Registered:
    """The latest version after a registration, and what the registration did."""

    template: TemplateVersion
    outcome: Outcome


# A schema: key -> (required, accepted types). bool is never accepted where int is asked.
Schema = Mapping[str, tuple[bool, tuple[type, ...]]]
_NUMBER = (int, float)
_TARGET: Schema = {
    "name": (True, (str,)),
    "host": (True, (str,)),
    "port": (False, (int,)),
    "community": (False, (str,)),
    "version": (False, (str,)),
    "interval": (False, (str,)),
    "retries": (False, (int,)),
    "oids": (False, (list,)),
}
SCHEMAS: dict[str, Schema] = {
    "snmp": {
        "targets": (True, (list,)),
        "listen_addr": (False, (str,)),
        "node_address": (False, (str,)),
        "timeout": (False, (str,)),
    },
    "sweep": {
        "networks": (True, (list,)),
        "ports": (False, (list,)),
        "sweep_modes": (False, (list,)),
        "interval": (False, (str,)),
        "concurrency": (False, (int,)),
        "timeout": (False, (str,)),
    },
    "port": {
        "host": (True, (str,)),
        "port": (True, (int,)),
        "timeout": (False, (str,)),
    },
    "icmp": {
        "host": (True, (str,)),
        "count": (False, (int,)),
        "interval": (False, (str,)),
        "timeout": (False, (str,)),
    },
}
# Element types of list keys, and the schema of list elements that are tables.
_ELEMENTS: dict[tuple[str, str], type] = {
    ("sweep", "networks"): str,
    ("sweep", "ports"): int,
    ("sweep", "sweep_modes"): str,
    ("snmp", "targets"): dict,
}
_ELEMENT_SCHEMAS: dict[tuple[str, str], Schema] = {("snmp", "targets"): _TARGET}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}


def template_name(field: str, value: str) -> str:
    """A template name: 1-128 characters of [A-Za-z0-9._:/-], starting with a letter or digit."""
    if not _NAME.fullmatch(value):
        raise InvalidArgument(field, "must be 1-128 characters of [A-Za-z0-9._:/-], starting alphanumeric")
    return value


def checker_type(field: str, value: str) -> str:
    """A checker type: lower case, 1-32 characters of [a-z0-9_-], starting with a letter."""
    if not _CHECKER_TYPE.fullmatch(value):
        raise InvalidArgument(field, "must be 1-32 characters of [a-z0-9_-], starting with a letter")
    return value


def name_prefix(field: str, value: str) -> str:
    """A listing prefix: any text a name may start with."""
    if len(value) > MAX_PREFIX:
        raise InvalidArgument(field, f"at most {MAX_PREFIX} characters")
    return value


def parse_body(field: str, fmt: TemplateFormat, body: str) -> dict[str, Any]:
    """The document a body holds; INVALID_ARGUMENT on `field` when it is not well formed."""
    if fmt is TemplateFormat.JSON:
        try:
            document = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(field, f"not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidArgument(field, "a JSON template must be an object at the top level")
        return document
    try:
        return tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(field, f"not valid TOML: {exc}") from None


def _is(value: object, types: tuple[type, ...]) -> bool:
    # bool is an int subclass; "port = true" is not a port.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _check(field: str, kind: str, schema: Schema, document: Mapping[str, Any], top: bool) -> None:
    for key, (required, types) in schema.items():
        path = f"{field}.{key}"
        if key not in document:
            if required:
                raise InvalidArgument(path, f"required by the {kind!r} schema")
            continue
        value = document[key]
        if not _is(value, types):
            raise InvalidArgument(path, f"must be {_TYPE_NAMES[types[0]]}")
        if not top or not isinstance(value, list):
            continue
        element = _ELEMENTS.get((kind, key))
        for i, item in enumerate(value):
            if element is not None and not _is(item, (element,)):
                raise InvalidArgument(f"{path}[{i}]", f"must be {_TYPE_NAMES[element]}")
            nested = _ELEMENT_SCHEMAS.get((kind, key))
            if nested is not None:
                _check(f"{path}[{i}]", kind, nested, item, top=False)


def check_schema(field: str, kind: str, document: Mapping[str, Any]) -> None:
    """Check a document against its checker type's schema; types without one pass.

    Keys the schema does not name are allowed: checkers grow options faster than schemas.
    """
    schema = SCHEMAS.get(kind)
    if schema is not None:
        _check(field, kind, schema, document, top=True)


def template_spec(
    name: str, kind: str, fmt: TemplateFormat | None, body: str, max_bytes: int, prefix: str = ""
) -> TemplateSpec:
    """Validate a registration; `prefix` ("templates[3].") qualifies the field names."""
    name = template_name(f"{prefix}name", name)
    kind = checker_type(f"{prefix}checker_type", kind)
    if fmt is None:
        raise InvalidArgument(f"{prefix}format", "required: JSON or TOML")
    size = len(body.encode())
    if size == 0:
        raise InvalidArgument(f"{prefix}body", "required")
    if size > max_bytes:
        raise InvalidArgument(f"{prefix}body", f"{size} bytes, over the limit of {max_bytes}")
    document = parse_body(f"{prefix}body", fmt, body)
    check_schema(f"{prefix}body", kind, document)
    return TemplateSpec(name, kind, fmt, body)


def decide(latest: TemplateVersion | None, spec: TemplateSpec, source: TemplateSource) -> Outcome:
    """Whether a registration makes a new version.

    An identical body is a no-op. An edge default never replaces an operator's version: once
    an operator has registered a template, it is theirs until they delete it (edges register
    their defaults at every start, and a restart must not undo an operator's change). An
    operator always wins, including over an edge default.
    """
    if latest is not None and latest.digest == spec.digest:
        return Outcome.UNCHANGED
    if latest is not None and source is TemplateSource.EDGE and latest.source is TemplateSource.OPERATOR:
        return Outcome.OPERATOR_KEPT
    return Outcome.CREATED
