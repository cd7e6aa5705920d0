"""Shared fixtures: the real PostgreSQL, etcd and NATS JetStream the integration tests use.

A fixture whose service does not answer fails the test (never skips it): a green run must mean
the integration tests really ran. `scripts/test` starts the services; see tests/services.py.
Tests that use these fixtures are marked `postgres`, `etcd` or `nats` automatically, so
`pytest -m "not postgres and not etcd and not nats"` runs only the tests that need nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest

from tests import services

# fixture name -> marker registered in pyproject.toml
_SERVICE_MARKERS = {
    "postgres_url": "postgres",
    "fresh_database": "postgres",
    "database_factory": "postgres",
    "etcd_endpoints": "etcd",
    "nats_url": "nats",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the services its fixtures reach, for `-m` selection."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        for marker in sorted({m for f, m in _SERVICE_MARKERS.items() if f in names}):
            item.add_marker(marker)


def _unavailable(service: str, env: str, error: Exception) -> NoReturn:
    # Callers invoke this after their `except` block: failing inside it would make pytest print
    # the whole exception chain and bury the one line that says what to do.
    pytest.fail(
        f"{service} is required by this test but is not reachable: {error}\n"
        f"  {services.HOW_TO_START}; to use another server set {env}.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """libpq URL of the test PostgreSQL server's `postgres` database (admin connection)."""
    url = services.database_url()
    try:
        services.check_postgres(url)
    except services.ServiceUnavailable as exc:
        error = exc
    else:
        return url
    _unavailable("PostgreSQL", services.DATABASE_URL_ENV, error)


@pytest.fixture(scope="session")
def etcd_endpoints() -> list[str]:
    """The test etcd as `host:port` strings (the shape of Settings.etcd_endpoints), all healthy."""
    try:
        endpoints = services.parse_endpoints(services.etcd_endpoints())
        for endpoint in endpoints:
            services.check_etcd(endpoint)
    except (services.ServiceUnavailable, ValueError) as exc:
        error = exc
    else:
        return [str(endpoint) for endpoint in endpoints]
    _unavailable("etcd", services.ETCD_ENDPOINTS_ENV, error)


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the test NATS server, checked to have JetStream enabled."""
    url = services.nats_url()
    try:
        services.check_nats(services.nats_endpoint(url))
    except (services.ServiceUnavailable, ValueError) as exc:
        error = exc
    else:
        return url
    _unavailable("NATS JetStream", services.NATS_URL_ENV, error)


@pytest.fixture
def database_factory(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh empty databases (SQLAlchemy URLs); all are dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = services.create_database(postgres_url)
        created.append(name)
        return services.with_database(postgres_url, name, driver="psycopg")

    yield make
    for name in created:
        services.drop_database(postgres_url, name)


@pytest.fixture
def fresh_database(database_factory: Callable[[], str]) -> str:
    """A new empty database for this test only, as `postgresql+psycopg://.../srcore_test_<hex>`."""
    return database_factory()
