"""Where the real test services live and how to tell that they answer.

The integration tests run against real PostgreSQL, etcd and NATS JetStream (`scripts/services up`
starts whatever is missing). Their addresses come from SRCORE_TEST_* variables so CI or a
developer can point the suite elsewhere; the defaults match `scripts/services`.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DATABASE_URL_ENV = "SRCORE_TEST_DATABASE_URL"
ETCD_ENDPOINTS_ENV = "SRCORE_TEST_ETCD_ENDPOINTS"
NATS_URL_ENV = "SRCORE_TEST_NATS_URL"

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_ETCD_ENDPOINTS = "127.0.0.1:2379"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

HOW_TO_START = "start the test services with `scripts/services up` (or run `scripts/test`)"
TEST_DATABASE_PREFIX = "srcore_test_"

# Short timeouts: a service that is down should fail the suite in seconds, not minutes.
CONNECT_TIMEOUT_SECONDS = 5


class ServiceUnavailable(Exception):
    """A test service did not answer as expected; the message says which and why."""


@dataclass(frozen=True)
class Endpoint:
    """A host and TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def database_url() -> str:
    """The libpq URL of the test PostgreSQL (an admin connection to its `postgres` database)."""
    return os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def etcd_endpoints() -> str:
    """The test etcd endpoints, comma separated `host:port` as SRCORE_ETCD_ENDPOINTS takes them."""
    return os.environ.get(ETCD_ENDPOINTS_ENV) or DEFAULT_ETCD_ENDPOINTS


def nats_url() -> str:
    """The URL of the test NATS server."""
    return os.environ.get(NATS_URL_ENV) or DEFAULT_NATS_URL


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now.

    The kernel picks it, so parallel tests do not collide; another process may still take it
    before the caller binds, which is acceptable for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def parse_endpoints(endpoints: str, default_port: int = 2379) -> list[Endpoint]:
    """Split `"h1:2379,http://h2:2379"` into endpoints; a scheme, if present, is ignored."""
    found: list[Endpoint] = []
    for raw in endpoints.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"//{item}")
        if not parts.hostname:
            raise ValueError(f"not a host:port endpoint: {item!r}")
        found.append(Endpoint(parts.hostname, parts.port or default_port))
    if not found:
        raise ValueError(f"no endpoints in {endpoints!r}")
    return found


def nats_endpoint(url: str) -> Endpoint:
    """The host and port of a `nats://host:port` URL."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"not a NATS URL: {url!r}")
    return Endpoint(parts.hostname, parts.port or 4222)


def check_postgres(url: str) -> int:
    """Connect, run `SELECT 1` and return the server version number (e.g. 150004).

    Raises ServiceUnavailable when PostgreSQL does not answer.
    """
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            row = conn.execute("SELECT 1, current_setting('server_version_num')::int").fetchone()
    except psycopg.Error as exc:
        raise ServiceUnavailable(f"PostgreSQL at {url} did not answer: {exc}") from exc
    if row is None or row[0] != 1:
        raise ServiceUnavailable(f"PostgreSQL at {url} answered SELECT 1 with {row!r}")
    version: int = row[1]
    return version


def check_etcd(endpoint: Endpoint) -> dict[str, Any]:
    """GET /health on one etcd member and return the decoded body; it must say healthy.

    http.client on purpose: urllib would route through any http_proxy in the environment.
    """
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise ServiceUnavailable(f"etcd at {endpoint} did not answer: {exc}") from exc
    finally:
        conn.close()
    try:
        health: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise ServiceUnavailable(f"etcd at {endpoint}: /health is not JSON: {body!r}") from exc
    if response.status != 200 or health.get("health") != "true":
        raise ServiceUnavailable(f"etcd at {endpoint} is unhealthy: {response.status} {health}")
    return health


def check_nats(endpoint: Endpoint) -> dict[str, Any]:
    """Read the INFO line NATS greets every client with; JetStream must be enabled in it."""
    try:
        with socket.create_connection(
            (endpoint.host, endpoint.port), timeout=CONNECT_TIMEOUT_SECONDS
        ) as sock:
            line = sock.makefile("rb").readline(64 * 1024)
    except OSError as exc:
        raise ServiceUnavailable(f"NATS at {endpoint} did not answer: {exc}") from exc
    if not line.startswith(b"INFO "):
        raise ServiceUnavailable(f"{endpoint} does not speak NATS (greeting {line[:80]!r})")
    try:
        info: dict[str, Any] = json.loads(line[5:])
    except ValueError as exc:
        raise ServiceUnavailable(f"NATS at {endpoint} sent a malformed INFO: {line!r}") from exc
    if info.get("jetstream") is not True:
        raise ServiceUnavailable(f"NATS at {endpoint} runs without JetStream (start it with -js)")
    return info


def with_database(url: str, name: str, *, driver: str | None = None) -> str:
    """`url` pointing at database `name`; `driver="psycopg"` gives the SQLAlchemy form."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if driver:
        scheme = f"{scheme}+{driver}"
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{name}"))


def create_database(admin_url: str) -> str:
    """Create an empty, uniquely named database and return its name."""
    name = f"{TEST_DATABASE_PREFIX}{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(admin_url: str, name: str) -> None:
    """Drop a test database, disconnecting whatever still uses it (PostgreSQL >= 13)."""
    if not name.startswith(TEST_DATABASE_PREFIX):
        # A typo here must never drop a real database.
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
