"""Fixtures of the coordination tests: coordinators per adapter, private etcd processes.

The shared etcd is tests/conftest.py's `etcd_endpoints` (SRCORE_TEST_ETCD_ENDPOINTS, default
127.0.0.1:2379, what `scripts/services up` starts; the run fails when it does not answer).
Tests that stop etcd start a private one of their own. Every test works under its own key
prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import aetcd
import pytest

from srcore.coord.etcd_client import parse_endpoint
from tests.coord.support import Coordinators, EtcdProcess


@pytest.fixture
def key_prefix() -> str:
    """A key prefix of this test's own."""
    return f"/srcore-test/{uuid.uuid4().hex[:12]}/"


async def _wipe(endpoints: list[str], prefix: str) -> None:
    client = aetcd.Client(*parse_endpoint(endpoints[0]), timeout=3)
    try:
        await client.delete_prefix(prefix.encode())
    finally:
        await client.close()


@pytest.fixture(params=["local", pytest.param("etcd", marks=pytest.mark.etcd)])
async def coordinators(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Coordinators]:
    """The contract suite runs once per adapter: in-process, and etcd."""
    endpoints: list[str] = request.getfixturevalue("etcd_endpoints") if request.param == "etcd" else []
    made = Coordinators(request.param, endpoints, key_prefix)
    yield made
    await made.close_all()
    if endpoints:
        await _wipe(endpoints, key_prefix)


@pytest.fixture
async def etcd_coordinators(etcd_endpoints: list[str], key_prefix: str) -> AsyncIterator[Coordinators]:
    """Coordinators on the shared etcd only."""
    made = Coordinators("etcd", etcd_endpoints, key_prefix)
    yield made
    await made.close_all()
    await _wipe(etcd_endpoints, key_prefix)


@pytest.fixture
def private_etcd() -> Iterator[EtcdProcess]:
    """An etcd process of the test's own, which it may stop (Debian's etcd-server)."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail("the etcd binary is not on PATH (install Debian's etcd-server)")
    etcd = EtcdProcess(binary)
    etcd.start()
    yield etcd
    etcd.cleanup()
