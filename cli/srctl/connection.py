"""Connection settings (flags, environment, development PKI) and the gRPC channel they make."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc

from srctl.argtypes import seconds
from srctl.errors import UsageError

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0

ENV_SERVER = "SRCTL_SERVER"
ENV_CACERT = "SRCTL_CACERT"
ENV_CERT = "SRCTL_CERT"
ENV_KEY = "SRCTL_KEY"
ENV_DATA_DIR = "SRCTL_DATA_DIR"
ENV_TOKEN = "SRCTL_TOKEN"

CA_FILE = "ca.pem"


class Role(enum.StrEnum):
    """Whom a command acts as; it picks the client certificate from the development PKI."""

    OPERATOR = "operator"
    EDGE = "edge"


# File names `srcore serve` writes under <data dir>/pki. The edge identity is the demo poller
# of the default tenant, which is what the edge commands exercise unless --cert/--key say else.
PKI_CLIENT_FILES: dict[Role, tuple[str, str]] = {
    Role.OPERATOR: ("operator.pem", "operator-key.pem"),
    Role.EDGE: ("edge-default-demo.pem", "edge-default-demo-key.pem"),
}


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything needed to reach the server, after flags, environment and defaults."""

    server: str
    cacert: Path | None
    cert: Path | None
    key: Path | None
    token: str | None
    timeout: float
    tls_server_name: str | None
    plaintext: bool


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Add the connection flags to `parser`.

    Defaults are suppressed so the flags can be given on the root parser and on every
    subcommand without the subcommand's absent value overwriting the root's; the real defaults
    are applied by `resolve_settings`.
    """
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,
        help=f"server address (env {ENV_SERVER}, default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--cacert",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"CA certificate that signed the server certificate (env {ENV_CACERT})",
    )
    group.add_argument(
        "--cert",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"client certificate for mutual TLS (env {ENV_CERT})",
    )
    group.add_argument(
        "--key",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"private key of the client certificate (env {ENV_KEY})",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=argparse.SUPPRESS,
        help=(
            "use the development PKI that srcore generated under DIR/pki for any of "
            f"--cacert/--cert/--key not given (env {ENV_DATA_DIR})"
        ),
    )
    group.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"API token, sent as 'authorization: Bearer <token>' (env {ENV_TOKEN})",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=seconds(allow_zero=False),
        default=argparse.SUPPRESS,
        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="name to verify the server certificate against, when the address is not in it",
    )
    group.add_argument(
        "--plaintext",
        action="store_true",
        default=argparse.SUPPRESS,
        help="connect without TLS (development servers only)",
    )


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str], role: Role) -> ConnectionSettings:
    """Combine flags, environment and the data-dir PKI into settings for acting as `role`.

    Each file is taken from its flag, else its environment variable, else the data dir.
    Raises UsageError when a file it resolved to does not exist or a certificate comes
    without its key (or the other way round).
    """

    def pick(name: str, env_name: str) -> str | None:
        value: object = getattr(args, name, None)
        if value is not None:
            return str(value)
        return env.get(env_name) or None

    data_dir_text = pick("data_dir", ENV_DATA_DIR)
    pki = Path(data_dir_text) / "pki" if data_dir_text else None
    cacert_text = pick("cacert", ENV_CACERT)
    cert_text = pick("cert", ENV_CERT)
    key_text = pick("key", ENV_KEY)

    cacert = Path(cacert_text) if cacert_text else (pki / CA_FILE if pki else None)
    cert = Path(cert_text) if cert_text else None
    key = Path(key_text) if key_text else None
    if pki is not None and cert is None and key is None:
        cert_name, key_name = PKI_CLIENT_FILES[role]
        cert, key = pki / cert_name, pki / key_name

    if (cert is None) != (key is None):
        raise UsageError("--cert and --key must be given together")
    for path, what in ((cacert, "CA certificate"), (cert, "client certificate"), (key, "key")):
        if path is not None and not path.is_file():
            raise UsageError(f"{what} file not found: {path}")

    timeout: float = getattr(args, "timeout", DEFAULT_TIMEOUT)
    return ConnectionSettings(
        server=pick("server", ENV_SERVER) or DEFAULT_SERVER,
        cacert=cacert,
        cert=cert,
        key=key,
        token=pick("token", ENV_TOKEN),
        timeout=timeout,
        tls_server_name=getattr(args, "tls_server_name", None),
        plaintext=getattr(args, "plaintext", False),
    )


RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class Client:
    """A channel plus what every call carries: the deadline and the bearer token."""

    def __init__(self, channel: grpc.Channel, settings: ConnectionSettings) -> None:
        self.channel = channel
        self._timeout = settings.timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {settings.token}"),) if settings.token else ()
        )

    @property
    def timeout(self) -> float:
        """The deadline of each call, in seconds."""
        return self._timeout

    def call(
        self,
        method: grpc.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
    ) -> ResponseT:
        """Invoke a unary RPC with the deadline and metadata; raises grpc.RpcError."""
        return method(request, timeout=self._timeout, metadata=self._metadata)

    def stream(
        self,
        method: grpc.UnaryStreamMultiCallable[RequestT, ResponseT],
        request: RequestT,
    ) -> grpc._CallIterator[ResponseT]:
        """Open a server stream with the metadata and no deadline: it runs until cancelled."""
        return method(request, metadata=self._metadata)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def connect(settings: ConnectionSettings) -> Client:
    """Open a channel to the server; no I/O happens until the first call."""
    options: list[tuple[str, str]] = [("grpc.primary_user_agent", "srctl")]
    if settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    if settings.plaintext:
        return Client(grpc.insecure_channel(settings.server, options=options), settings)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(settings.cacert),
        private_key=_read(settings.key),
        certificate_chain=_read(settings.cert),
    )
    return Client(grpc.secure_channel(settings.server, credentials, options=options), settings)
