"""`srcore`: serve, migrate and health-check a core replica."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import srcore
from srcore.domain.errors import InvalidArgument
from srcore.observability.logs import configure_logging
from srcore.settings import Settings, load_settings

log = logging.getLogger("srcore")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srcore",
        description="ServiceRadar Core: the gRPC control plane edge cores dial into over mutual TLS.",
        epilog="Settings come from --config (TOML), then SRCORE_* environment variables, then flags. "
        "See docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"srcore {srcore.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML settings file (or SRCORE_CONFIG)")
        p.add_argument("--data-dir", type=Path, help="data directory (SQLite file, dev PKI); default ./data")

    serve = sub.add_parser(
        "serve",
        help="run a replica",
        description="Run a replica. With no settings: SQLite and a development PKI under the "
        "data dir, in-process coordination, events kept in the outbox.",
    )
    common(serve)
    serve.add_argument("--listen", help="HOST:PORT for gRPC (default 127.0.0.1:50051)")
    serve.add_argument(
        "--metrics-listen", help="HOST:PORT for /metrics, '' to disable (default 127.0.0.1:9464)"
    )
    serve.add_argument("--log-format", choices=["text", "json"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    common(migrate)

    rotate = sub.add_parser(
        "rotate-key",
        help="re-seal integration credentials with the newest secret key and exit",
        description="Re-seal every integration source's credentials sealed with an older key with the "
        "first key of secret_keys (SRCORE_SECRET_KEYS). Run it after putting a new key first on every "
        "replica; once it reports nothing left to re-seal, the old key can be dropped. Safe to run "
        "again, and while replicas serve. See docs/security.md.",
    )
    common(rotate)

    check = sub.add_parser(
        "healthcheck",
        help="exit 0 when the replica's gRPC health service reports SERVING (container probes)",
    )
    common(check)
    check.add_argument("--address", default="127.0.0.1:50051", help="replica to probe")
    check.add_argument("--cacert", help="CA to verify the server with (default: DATA_DIR/pki/ca.pem)")
    check.add_argument("--cert", help="client certificate (default: DATA_DIR/pki/operator.pem)")
    check.add_argument("--key", help="client key (default: DATA_DIR/pki/operator-key.pem)")
    check.add_argument("--tls-server-name", help="name to verify in the server certificate")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    for name in ("listen", "metrics_listen", "log_format", "log_level"):
        overrides[name] = getattr(args, name, None)
    return load_settings(args.config, overrides=overrides)


def _backends(settings: Settings) -> str:
    """What this replica runs on, for the start-up banner."""
    store = "PostgreSQL" if settings.database_url.startswith("postgres") else "SQLite"
    coordination = "etcd" if settings.etcd_endpoints else "in-process coordination"
    events = "NATS JetStream events" if settings.nats_url else "outbox events"
    return f"{store}, {coordination}, {events}"


def _print_welcome(settings: Settings, port: int) -> None:
    host = settings.listen.rpartition(":")[0] or "127.0.0.1"
    address = f"{host}:{port}"
    pki = (settings.data_dir / "pki").resolve()
    data = settings.data_dir.resolve()
    if not settings.embedded_tls:
        print(f"srcore serving on {address}", flush=True)
        return
    print(
        f"""srcore serving on {address} ({_backends(settings)})
Development PKI in {pki}:
  CA              {pki}/ca.pem
  operator cert   {pki}/operator.pem  (key operator-key.pem; platform admin)
  edge cert       {pki}/edge-default-demo.pem
                  (key edge-default-demo-key.pem; tenant default, poller demo)
Try:
  srctl --data-dir {data} --server {address} cluster status
  srctl --data-dir {data} --server {address} edge register --poller demo --partition default
  srctl --data-dir {data} --server {address} pollers list
  grpcurl -cacert {pki}/ca.pem -cert {pki}/operator.pem -key {pki}/operator-key.pem {address} list
  grpcurl -cacert {pki}/ca.pem -cert {pki}/operator.pem -key {pki}/operator-key.pem \\
      {address} serviceradar.admin.v1.ClusterService/GetClusterStatus""",
        flush=True,
    )


async def _serve(settings: Settings) -> int:
    from srcore.app import CoreApp  # imported late so `srcore --help` stays fast

    app = CoreApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    _print_welcome(settings, app.port)
    await stop.wait()
    log.info("signal received: draining for up to %.0fs", settings.grace_period)
    await app.stop()
    return 0


async def _migrate(settings: Settings) -> int:
    from srcore.store.database import Database, sqlite_url

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url or sqlite_url(settings.data_dir))
    try:
        revision = await db.migrate()
    finally:
        await db.dispose()
    print(f"database at revision {revision}")
    return 0


async def _rotate_key(settings: Settings) -> int:
    from srcore.dispatch.work import rotate_credentials
    from srcore.security.credentials import CredentialVault
    from srcore.security.crypto import keyring, load_or_create_key_file
    from srcore.store.database import Database, sqlite_url
    from srcore.store.work import WorkRepository

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.secret_keys:
        ring = keyring(settings.secret_keys)
    else:
        ring = load_or_create_key_file(settings.data_dir)
    db = Database(settings.database_url or sqlite_url(settings.data_dir))
    try:
        ok, detail = await db.healthy()
        if not ok:
            print(f"srcore: the store is not ready ({detail}): run `srcore migrate` first", file=sys.stderr)
            return 1
        rotation = await rotate_credentials(WorkRepository(db), CredentialVault(lambda: ring))
    finally:
        await db.dispose()
    print(f"re-sealed {rotation.resealed} credentials with key {rotation.key_id!r}")
    for item_id, problem in sorted(rotation.failed.items()):
        print(f"  not re-sealed: source {item_id}: {problem}", file=sys.stderr)
    return 1 if rotation.failed else 0


def _healthcheck(settings: Settings, args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    pki = settings.data_dir / "pki"
    # The probe is a client: it needs a client certificate (the server's own is for serving).
    ca = (Path(args.cacert) if args.cacert else pki / "ca.pem").read_bytes()
    cert = (Path(args.cert) if args.cert else pki / "operator.pem").read_bytes()
    key = (Path(args.key) if args.key else pki / "operator-key.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    with grpc.secure_channel(args.address, credentials, options=options) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    serving = answer.status == health_pb2.HealthCheckResponse.SERVING
    print("serving" if serving else "not serving")
    return 0 if serving else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `srcore` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except InvalidArgument as exc:
        print(f"srcore: invalid setting {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_serve(settings))
        return 0
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "rotate-key":
        return asyncio.run(_rotate_key(settings))
    return _healthcheck(settings, args)


if __name__ == "__main__":
    sys.exit(main())
