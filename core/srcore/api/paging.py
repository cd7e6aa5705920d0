"""Opaque page tokens: the keyset of the last row, JSON in URL-safe base64."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from srcore.domain.errors import InvalidArgument

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def page_size(requested: int) -> int:
    """The page size to use, refusing sizes over the maximum."""
    if requested > MAX_PAGE:
        raise InvalidArgument("page_size", f"at most {MAX_PAGE}")
    return requested or DEFAULT_PAGE


def encode_token(key: list[Any]) -> str:
    """A token for the row after which the next page starts."""
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode()


def decode_token(token: str, arity: int) -> list[Any]:
    """The keyset a token carries; INVALID_ARGUMENT when it is not one this server issued."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", "not a token this server issued") from exc
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidArgument("page_token", "not a token this server issued")
    return key


def decode_time(value: str) -> datetime:
    """A timestamp part of a page token's sort key."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument("page_token", "not a token this server issued for this list") from None


def text_key(token: str, arity: int) -> tuple[str, ...] | None:
    """The keyset of a token whose parts are all strings; None for no token."""
    if not token:
        return None
    key = decode_token(token, arity)
    if not all(isinstance(part, str) for part in key):
        raise InvalidArgument("page_token", "not a token this server issued")
    return tuple(key)
