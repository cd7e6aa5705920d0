"""Settings: defaults for the embedded core, overridden by a TOML file, then SRCORE_* variables."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from srcore.domain.errors import InvalidArgument


@dataclass(slots=True)
class Settings:
    """Every knob of a replica. See docs/configuration.md for each one."""

    data_dir: Path = Path("./data")
    listen: str = "127.0.0.1:50051"
    advertise_address: str = ""
    metrics_listen: str = "127.0.0.1:9464"
    replica_id: str = ""
    database_url: str = ""
    database_pool_size: int = 10
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd_prefix: str = "/serviceradar/"
    lease_ttl: float = 10.0
    nats_url: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    trust_domain: str = "serviceradar"
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    heartbeat_flush_interval: float = 1.0
    max_message_bytes: int = 4 * 1024 * 1024
    grace_period: float = 10.0
    ingest_credit_window: int = 8
    ingest_max_results_per_chunk: int = 10_000
    ingest_max_chunks_per_batch: int = 1_000_000
    ingest_global_budget: int = 400_000
    ingest_tenant_budget: int = 200_000
    ingest_resume_window: float = 3600.0
    ingest_flush_results: int = 5000
    ingest_flush_delay: float = 0.002
    ingest_writers: int = 0
    log_format: str = "text"
    log_level: str = "info"

    @property
    def embedded_tls(self) -> bool:
        """True when no TLS material is configured, so the development PKI is used."""
        return not (self.tls_cert or self.tls_key or self.tls_client_ca)

    def validate(self) -> Settings:
        """Reject contradictory or out-of-range settings, naming the setting."""
        if not self.embedded_tls and not (self.tls_cert and self.tls_key and self.tls_client_ca):
            raise InvalidArgument("tls_cert", "tls_cert, tls_key and tls_client_ca go together")
        if self.heartbeat_interval <= 0:
            raise InvalidArgument("heartbeat_interval", "must be positive")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise InvalidArgument("heartbeat_timeout", "must be longer than heartbeat_interval")
        if self.max_message_bytes < 1024:
            raise InvalidArgument("max_message_bytes", "must be at least 1024")
        if self.log_format not in ("text", "json"):
            raise InvalidArgument("log_format", "must be 'text' or 'json'")
        return self


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind is Path:
            return Path(raw)
        if kind == list[str]:
            if isinstance(raw, str):
                return [part.strip() for part in raw.split(",") if part.strip()]
            return [str(part) for part in raw]
        if kind is bool:
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(name, f"cannot read {raw!r} as {getattr(kind, '__name__', kind)}") from exc


def load_settings(
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then SRCORE_<NAME> variables, then explicit overrides."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or (Path(env["SRCORE_CONFIG"]) if env.get("SRCORE_CONFIG") else None)
    if path is not None:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        for key, raw in document.items():
            if key not in names:
                raise InvalidArgument(key, f"unknown setting in {path}")
            values[key] = _coerce(key, hints[key], raw)
    for key in names:
        raw = env.get(f"SRCORE_{key.upper()}")
        if raw is not None and raw != "":
            values[key] = _coerce(f"SRCORE_{key.upper()}", hints[key], raw)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, hints[key], raw)
    return Settings(**values).validate()
