"""Flags and parsers the tenancy nouns share: paging of list verbs, durations, times."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def add_list_flags(parser: argparse.ArgumentParser, items: str) -> None:
    """--page-size, --all/--no-all and --page-token, as `srctl pollers list` has them."""
    parser.add_argument(
        "--page-size",
        metavar="N",
        type=page_size,
        default=0,
        help=f"{items} per request, 1-1000 (default 100)",
    )
    parser.add_argument(
        "--all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow next_page_token through every page (default); --no-all stops after one",
    )
    parser.add_argument(
        "--page-token", metavar="TOKEN", default="", help="start at this page (from --no-all)"
    )


def page_size(text: str) -> int:
    """An argparse type: 1-1000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1-1000: {text!r}")
    return value


def duration(text: str) -> timedelta:
    """An argparse type: 90d, 24h, 1h30m, 45s."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"not a duration like 90d, 24h, 1h30m or 45s: {text!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def moment(text: str) -> datetime:
    """An argparse type: an RFC 3339 time, or a duration meaning that long ago (1h = an hour ago)."""
    try:
        return datetime.now(UTC) - duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time (2025-01-02T03:04:05Z) or an age (1h): {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
