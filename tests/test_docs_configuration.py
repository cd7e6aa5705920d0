"""docs/configuration.md documents every setting a replica reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from srcore.domain.errors import InvalidArgument
from srcore.settings import Settings, load_settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [f.name for f in dataclasses.fields(Settings) if f"`{f.name}`" not in text]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_environment_overrides_the_toml_file_and_lists_split_on_commas(tmp_path: Path) -> None:
    config = tmp_path / "core.toml"
    config.write_text('listen = "0.0.0.0:6000"\nheartbeat_interval = 5\netcd_endpoints = ["a:1"]\n')
    settings = load_settings(
        config, environ={"SRCORE_HEARTBEAT_INTERVAL": "7", "SRCORE_ETCD_ENDPOINTS": "e1:2379, e2:2379"}
    )
    assert settings.listen == "0.0.0.0:6000"
    assert settings.heartbeat_interval == 7
    assert settings.etcd_endpoints == ["e1:2379", "e2:2379"]


def test_an_unknown_or_unreadable_setting_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "core.toml"
    config.write_text("heartbeat_intervall = 5\n")
    with pytest.raises(InvalidArgument) as unknown:
        load_settings(config, environ={})
    assert unknown.value.field == "heartbeat_intervall"
    with pytest.raises(InvalidArgument) as unreadable:
        load_settings(None, environ={"SRCORE_MAX_MESSAGE_BYTES": "lots"})
    assert unreadable.value.field == "SRCORE_MAX_MESSAGE_BYTES"
