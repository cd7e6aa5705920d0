"""Configuration versions: content hashes of a canonical serialisation."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_version(config: dict[str, Any]) -> str:
    """A stable version for a configuration: equal content gives an equal version everywhere.

    Keys are sorted and separators fixed, so the hash does not depend on insertion order
    or on which replica computed it.
    """
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
