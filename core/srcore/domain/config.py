"""Configuration versions: content hashes of a canonical serialisation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def config_version(config: dict[str, Any]) -> str:
    """A stable version for a configuration: equal content gives an equal version everywhere.

    Keys are sorted and separators fixed, so the hash does not depend on insertion order
    or on which replica computed it.
    """
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def poller_config_version(heartbeat_interval: float, items: Iterable[tuple[str, str, str]]) -> str:
    """The version of a poller's configuration: its heartbeat interval and its items.

    `items` are (kind, item id, item digest) triples; each digest already hashes the item's
    canonical edge entry (`domain.work.item_digest`), so the version changes exactly when the
    poller's work or any part of it changes, and is computed without reading item specs.
    """
    return config_version(
        {"heartbeat_interval_ms": round(heartbeat_interval * 1000), "items": sorted(list(i) for i in items)}
    )
