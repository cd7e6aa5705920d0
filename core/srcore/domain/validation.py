"""Validation of identifiers and free text. Each failure names the field it is about."""

from __future__ import annotations

import re

from srcore.domain.errors import InvalidArgument

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CAPABILITY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")

MAX_LABELS = 64
MAX_CAPABILITIES = 64
MAX_AGENTS = 1024


def identifier(field: str, value: str) -> str:
    """An id (poller, agent, check): 1-128 of [A-Za-z0-9._:-], starting alphanumeric."""
    if not value:
        raise InvalidArgument(field, "required")
    if not _ID.fullmatch(value):
        raise InvalidArgument(
            field, "must be 1-128 characters of [A-Za-z0-9._:-] starting with a letter or digit"
        )
    return value


def slug(field: str, value: str) -> str:
    """A tenant or partition name: 1-63 of [a-z0-9-], not starting or ending with '-'."""
    if not value:
        raise InvalidArgument(field, "required")
    if not _SLUG.fullmatch(value):
        raise InvalidArgument(field, "must be 1-63 characters of [a-z0-9-], not starting or ending with '-'")
    return value


def text(field: str, value: str, limit: int) -> str:
    """Free text of at most `limit` characters, no control characters but tab and newline."""
    if len(value) > limit:
        raise InvalidArgument(field, f"longer than {limit} characters")
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise InvalidArgument(field, "contains control characters")
    return value


def capabilities(field: str, values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A de-duplicated, sorted list of lower-case capability names."""
    if len(values) > MAX_CAPABILITIES:
        raise InvalidArgument(field, f"more than {MAX_CAPABILITIES} entries")
    for i, value in enumerate(values):
        if not _CAPABILITY.fullmatch(value):
            raise InvalidArgument(f"{field}[{i}]", "must be 1-32 characters of [a-z0-9_.-]")
    return tuple(sorted(set(values)))


def labels(field: str, values: dict[str, str]) -> dict[str, str]:
    """Labels: at most 64, keys 1-63 characters, values at most 255."""
    if len(values) > MAX_LABELS:
        raise InvalidArgument(field, f"more than {MAX_LABELS} entries")
    for key, value in values.items():
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(f"{field}[{key[:70]!r}]", "key must be 1-63 characters of [A-Za-z0-9._/-]")
        text(f"{field}[{key!r}]", value, 255)
    return dict(sorted(values.items()))
