"""Fixtures of the srctl tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.core import RunningCore
from tests.helpers.core import running_core as start_running_core

PKI_FILES = (
    "ca.pem",
    "operator.pem",
    "operator-key.pem",
    "edge-default-demo.pem",
    "edge-default-demo-key.pem",
)


@pytest.fixture(autouse=True)
def _no_srctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's SRCTL_* settings out of the tests."""
    for name in os.environ:
        if name.startswith("SRCTL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir laid out like srcore's development PKI (placeholder file contents)."""
    pki = tmp_path / "data" / "pki"
    pki.mkdir(parents=True)
    for name in PKI_FILES:
        (pki / name).write_text(f"placeholder {name}\n")
    return tmp_path / "data"


@pytest.fixture
async def running_core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A real core in this event loop; tests drive srctl against it from a worker thread."""
    async with start_running_core(tmp_path / "data", heartbeat_flush_interval=0.05) as core:
        yield core
