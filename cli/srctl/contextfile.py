"""The srctl context file: named connection settings, and how they fill in for the environment.

The file is ``$SRCTL_CONFIG``, else ``$XDG_CONFIG_HOME/srctl/config.yaml`` (default
``~/.config/srctl/config.yaml``), written with mode 0600 because it may hold a token. The
context in use is ``--context``, else ``SRCTL_CONTEXT``, else the file's ``current-context``;
its values come after flags and environment variables, so ``--token`` and ``SRCTL_TOKEN`` win.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from srctl.errors import UsageError

ENV_CONFIG = "SRCTL_CONFIG"
ENV_CONTEXT = "SRCTL_CONTEXT"

# Context key -> the environment variable srctl.connection reads for it.
FIELDS = {
    "server": "SRCTL_SERVER",
    "cacert": "SRCTL_CACERT",
    "cert": "SRCTL_CERT",
    "key": "SRCTL_KEY",
    "data_dir": "SRCTL_DATA_DIR",
    "token": "SRCTL_TOKEN",
}


def config_path(env: Mapping[str, str]) -> Path:
    """Where the context file is."""
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "srctl" / "config.yaml"


def load(env: Mapping[str, str]) -> dict[str, Any]:
    """The context file's document (empty when there is none)."""
    path = config_path(env)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {"contexts": {}}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("contexts", {}), dict):
        raise UsageError(f"{path}: expected a mapping with a 'contexts' mapping")
    document.setdefault("contexts", {})
    return document


def save(env: Mapping[str, str], document: dict[str, Any]) -> Path:
    """Write the context file, readable by its owner only."""
    path = config_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    os.chmod(path, 0o600)
    return path


def with_context(args: argparse.Namespace, env: Mapping[str, str]) -> Mapping[str, str]:
    """`env` with the selected context's values filled in where the environment has none."""
    name = getattr(args, "context", None) or env.get(ENV_CONTEXT)
    document = load(env) if name or config_path(env).exists() else {"contexts": {}}
    name = name or document.get("current-context")
    if not name:
        return env
    values = document["contexts"].get(name)
    if not isinstance(values, dict):
        raise UsageError(f"no context named {name!r} in {config_path(env)}")
    merged = {FIELDS[key]: str(value) for key, value in values.items() if key in FIELDS and value}
    merged.update(env)
    return merged
