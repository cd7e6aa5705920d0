"""Settings: defaults for the embedded core, overridden by a TOML file, then SRCORE_* variables."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from srcore.domain.errors import InvalidArgument
from srcore.events.config import EventConfig


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
    nats_stream: str = "SR_INFRA"
    events_subject_prefix: str = "sr.infra"
    events_encoding: str = "protobuf"
    events_max_age: float = 7 * 86400.0
    events_max_bytes: int = -1
    events_max_msgs: int = -1
    events_duplicate_window: float = 120.0
    events_outbox_retention: float = 7 * 86400.0
    events_relay_batch_size: int = 1000
    events_relay_max_in_flight: int = 1000
    events_publish_timeout: float = 5.0
    events_poll_interval: float = 1.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    trust_domain: str = "serviceradar"
    admin_listen: str = ""
    secret_keys: list[str] = field(default_factory=list)
    auth_cache_ttl: float = 5.0
    package_ttl: float = 86400.0
    package_cert_days: int = 365
    package_ca_cert: str = ""
    package_ca_key: str = ""
    package_server_ca: str = ""
    package_core_address: str = ""
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    heartbeat_flush_interval: float = 1.0
    liveness_check_interval: float = 1.0
    poller_inactive_after: float = 7 * 86400.0
    sync_keepalive_interval: float = 15.0
    dispatch_rebalance_threshold: float = 0.25
    dispatch_resync_interval: float = 60.0
    dispatch_registry_settle: float = 1.0
    max_message_bytes: int = 4 * 1024 * 1024
    grace_period: float = 10.0
    ingest_credit_window: int = 32
    ingest_max_results_per_chunk: int = 10_000
    ingest_max_chunks_per_batch: int = 1_000_000
    ingest_global_budget: int = 400_000
    ingest_tenant_budget: int = 200_000
    ingest_resume_window: float = 3600.0
    ingest_flush_results: int = 5000
    ingest_flush_delay: float = 0.002
    ingest_writers: int = 0
    max_open_ports_per_host: int = 256
    check_failing_after: int = 3
    processing_max_lag: float = 1.0
    identity_enabled: bool = True
    identity_cache_size: int = 200_000
    identity_cache_ttl: float = 300.0
    identity_last_seen_resolution: float = 60.0
    log_format: str = "text"
    log_level: str = "info"
    stats_refresh_interval: float = 30.0
    stats_window: int = 300
    template_max_bytes: int = 64 * 1024
    alert_evaluation_interval: float = 10.0
    alert_escalation_delay: float = 900.0
    alert_cooldown: float = 300.0
    alert_sweep_drop_threshold: float = 0.2
    alert_sweep_min_hosts: int = 5
    alert_reject_ratio: float = 0.05
    alert_reject_min_results: int = 100
    alert_reject_window: float = 300.0
    alert_delivery_attempts: int = 4
    alert_delivery_backoff: float = 1.0
    alert_delivery_timeout: float = 10.0
    alert_delivery_rounds: int = 8
    alert_redelivery_delay: float = 30.0
    alert_core_notices: bool = True

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
        if self.liveness_check_interval <= 0:
            raise InvalidArgument("liveness_check_interval", "must be positive")
        if self.poller_inactive_after < self.heartbeat_timeout:
            raise InvalidArgument("poller_inactive_after", "must be at least heartbeat_timeout")
        if self.etcd_endpoints and self.lease_ttl < 2:
            raise InvalidArgument("lease_ttl", "must be at least 2 seconds (etcd's shortest lease)")
        if not 1 <= self.sync_keepalive_interval <= 300:
            raise InvalidArgument("sync_keepalive_interval", "must be between 1 and 300 seconds")
        if self.dispatch_rebalance_threshold < 0:
            raise InvalidArgument("dispatch_rebalance_threshold", "must not be negative")
        if self.dispatch_resync_interval < 1:
            raise InvalidArgument("dispatch_resync_interval", "must be at least 1 second")
        if self.dispatch_registry_settle < 0:
            raise InvalidArgument("dispatch_registry_settle", "must not be negative")
        if self.max_open_ports_per_host < 1:
            raise InvalidArgument("max_open_ports_per_host", "must be at least 1")
        if self.check_failing_after < 1:
            raise InvalidArgument("check_failing_after", "must be at least 1")
        if not 0 <= self.processing_max_lag <= 60:
            raise InvalidArgument("processing_max_lag", "must be between 0 and 60 seconds")
        if self.max_message_bytes < 1024:
            raise InvalidArgument("max_message_bytes", "must be at least 1024")
        if self.identity_cache_size < 0:
            raise InvalidArgument("identity_cache_size", "must not be negative")
        if self.identity_cache_ttl < 0:
            raise InvalidArgument("identity_cache_ttl", "must not be negative")
        if self.identity_last_seen_resolution < 0:
            raise InvalidArgument("identity_last_seen_resolution", "must not be negative")
        if self.stats_refresh_interval < 1:
            raise InvalidArgument("stats_refresh_interval", "must be at least 1 second")
        if self.stats_window < 1:
            raise InvalidArgument("stats_window", "must be at least 1 second")
        if self.template_max_bytes < 1:
            raise InvalidArgument("template_max_bytes", "must be positive")
        self._validate_alerts()
        if self.log_format not in ("text", "json"):
            raise InvalidArgument("log_format", "must be 'text' or 'json'")
        EventConfig.from_settings(self)
        self._validate_access()
        return self

    def _validate_alerts(self) -> None:
        if self.alert_evaluation_interval < 0.1:
            raise InvalidArgument("alert_evaluation_interval", "must be at least 0.1 seconds")
        for name in ("alert_escalation_delay", "alert_cooldown", "alert_delivery_backoff"):
            if getattr(self, name) < 0:
                raise InvalidArgument(name, "must not be negative")
        for name in ("alert_sweep_drop_threshold", "alert_reject_ratio"):
            if not 0 < getattr(self, name) < 1:
                raise InvalidArgument(name, "must be between 0 and 1 (exclusive)")
        if self.alert_sweep_min_hosts < 1 or self.alert_reject_min_results < 1:
            raise InvalidArgument("alert_sweep_min_hosts", "alert_*_min_* settings must be at least 1")
        if self.alert_reject_window < 1:
            raise InvalidArgument("alert_reject_window", "must be at least 1 second")
        if not 1 <= self.alert_delivery_attempts <= 20:
            raise InvalidArgument("alert_delivery_attempts", "must be between 1 and 20")
        if self.alert_delivery_timeout <= 0:
            raise InvalidArgument("alert_delivery_timeout", "must be positive")
        if not 1 <= self.alert_delivery_rounds <= 100:
            raise InvalidArgument("alert_delivery_rounds", "must be between 1 and 100")
        if self.alert_redelivery_delay < 1:
            raise InvalidArgument("alert_redelivery_delay", "must be at least 1 second")

    def _validate_access(self) -> None:
        # Imported here so that reading settings (e.g. for `srcore --help`) does not load the
        # cryptography library.
        from srcore.security.crypto import keyring

        if self.admin_listen and self.admin_listen == self.listen and not self.listen.endswith(":0"):
            raise InvalidArgument("admin_listen", "must differ from listen")
        if self.secret_keys:
            keyring(self.secret_keys)
        if self.auth_cache_ttl < 0:
            raise InvalidArgument("auth_cache_ttl", "must not be negative")
        if not 60 <= self.package_ttl <= 30 * 86400:
            raise InvalidArgument("package_ttl", "must be between 60 seconds and 30 days")
        if self.package_cert_days < 1:
            raise InvalidArgument("package_cert_days", "must be at least 1")
        if bool(self.package_ca_cert) != bool(self.package_ca_key):
            raise InvalidArgument("package_ca_cert", "package_ca_cert and package_ca_key go together")


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
