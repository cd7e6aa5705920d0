"""srctl tenants|partitions|tokens|packages|audit|context against a real core."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from srctl.main import main
from tests.tenancy.support import Site


class Srctl:
    """Runs srctl in a worker thread (the core serves on this event loop) and captures output."""

    def __init__(self, site: Site, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        self._capsys = capsys
        self.config = config
        self.data_dir = str(site.core.data_dir)
        self.server = site.core.address
        self.token_port = f"127.0.0.1:{site.app.admin_port}"
        self.ca = str(site.core.data_dir / "pki" / "ca.pem")

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = self._capsys.readouterr()
        return code, out, err

    async def platform(self, *argv: str) -> str:
        """Run as the dev operator certificate (platform admin); the command must succeed."""
        code, out, err = await self(*argv, "--data-dir", self.data_dir, "--server", self.server)
        assert code == 0, err
        return out

    async def with_token(self, token: str, *argv: str) -> tuple[int, str, str]:
        """Run with a token only, on the token port."""
        return await self(*argv, "--token", token, "--server", self.token_port, "--cacert", self.ca)


@pytest.fixture
def srctl(
    sqlite_site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Srctl:
    # srctl reads the process environment: keep the developer's settings out, the config file in.
    for name in [n for n in os.environ if n.startswith("SRCTL_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "srctl.yaml"
    monkeypatch.setenv("SRCTL_CONFIG", str(config))
    return Srctl(sqlite_site, capsys, config)


async def test_tenants_tokens_partitions_and_audit(srctl: Srctl) -> None:
    out = await srctl.platform("tenants", "create", "acme", "--display-name", "Acme Corp")
    assert "Acme Corp" in out and "active" in out
    created = json.loads(
        await srctl.platform("tokens", "create", "--role", "admin", "--tenant", "acme", "-o", "json")
    )
    secret, token_id = created["secret"], created["token"]["token_id"]

    code, out, err = await srctl.with_token(secret, "partitions", "create", "dc1", "--cidr", "10.0.0.0/8")
    assert code == 0, err
    code, out, _ = await srctl.with_token(secret, "partitions", "list", "-o", "json")
    assert [(p["tenant"], p["name"], p["cidrs"]) for p in json.loads(out)["partitions"]] == [
        ("acme", "dc1", ["10.0.0.0/8"])
    ]
    code, out, _ = await srctl.with_token(secret, "tokens", "list")
    assert token_id in out and secret not in out

    viewer = json.loads(
        await srctl.platform("tokens", "create", "--role", "viewer", "--tenant", "acme", "-o", "json")
    )
    code, _, err = await srctl.with_token(viewer["secret"], "partitions", "delete", "dc1")
    assert code == 5 and "PERMISSION_DENIED" in err

    code, out, _ = await srctl.with_token(
        secret, "audit", "list", "--outcome", "denied", "--since", "1h", "-o", "json"
    )
    [event] = json.loads(out)["events"]
    assert event["actor"] == f"token:{viewer['token']['token_id']}"
    assert event["method"].endswith("DeletePartition") and event["target"] == "name=dc1"

    code, _, err = await srctl.with_token(secret, "tokens", "revoke", viewer["token"]["token_id"])
    assert code == 0, err
    code, _, err = await srctl.with_token(viewer["secret"], "tenants", "get")
    assert code == 5 and "UNAUTHENTICATED" in err

    out = await srctl.platform("tenants", "suspend", "acme", "--reason", "audit")
    assert "suspended" in out
    code, _, err = await srctl.with_token(secret, "tenants", "get")
    assert code == 5 and "suspended" in err


async def test_packages_issue_download_and_list(srctl: Srctl, tmp_path: Path) -> None:
    issued = json.loads(
        await srctl.platform(
            "packages", "issue", "--poller", "edge-1", "--partition", "dc1", "--ttl", "2h", "-o", "json"
        )
    )
    package_id, download_token = issued["package"]["package_id"], issued["download_token"]
    out_dir = tmp_path / "bundle"
    # The installer has the CA and the download token, nothing else.
    code, out, err = await srctl(
        "packages", "download", package_id, "--download-token", download_token,
        "--out", str(out_dir), "--server", srctl.token_port, "--cacert", srctl.ca,
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["ca.pem", "cert.pem", "key.pem", "poller.json"]
    assert stat.S_IMODE((out_dir / "key.pem").stat().st_mode) == 0o600
    settings = json.loads((out_dir / "poller.json").read_text())
    assert (settings["tenant"], settings["partition"], settings["poller_id"]) == ("default", "dc1", "edge-1")
    assert settings["core_address"] == srctl.server

    code, _, err = await srctl(
        "packages", "download", package_id, "--download-token", download_token,
        "--out", str(tmp_path / "again"), "--server", srctl.token_port, "--cacert", srctl.ca,
    )  # fmt: skip
    assert code == 5, err
    listed = json.loads(await srctl.platform("packages", "list", "--state", "delivered", "-o", "json"))
    assert [p["package_id"] for p in listed["packages"]] == [package_id]
    out = await srctl.platform("packages", "revoke", package_id, "--reason", "test")
    assert "revoked" in out


async def test_contexts_hold_connection_settings_and_hide_tokens(
    srctl: Srctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    await srctl.platform("tenants", "create", "acme")
    created = json.loads(
        await srctl.platform("tokens", "create", "--role", "viewer", "--tenant", "acme", "-o", "json")
    )
    code, _, err = await srctl(
        "context",
        "set",
        "acme",
        "--server",
        srctl.token_port,
        "--cacert",
        srctl.ca,
        "--token",
        created["secret"],
    )
    assert code == 0, err
    config = srctl.config
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert yaml.safe_load(config.read_text())["current-context"] == "acme"

    code, out, err = await srctl("tenants", "get", "-o", "json")  # no flags: the current context
    assert code == 0, err
    assert json.loads(out)["tenant"]["name"] == "acme"

    code, out, _ = await srctl("context", "list", "-o", "json")
    assert created["secret"] not in out
    assert json.loads(out)["contexts"][0]["token"] == "set"

    # The environment wins over the context.
    monkeypatch.setenv("SRCTL_TOKEN", "srt_aaaaaaaaaaaa_" + "A" * 43)
    code, _, err = await srctl("tenants", "get")
    assert code == 5 and "UNAUTHENTICATED" in err
    monkeypatch.delenv("SRCTL_TOKEN")
    code, _, err = await srctl("--context", "missing", "tenants", "get")
    assert code == 2 and "missing" in err
