"""Argument parsing, environment fallbacks and the resolution of certificate files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from serviceradar.edge.v1 import edge_service_pb2 as edge_pb
from srctl.connection import (
    DEFAULT_SERVER,
    DEFAULT_TIMEOUT,
    ConnectionSettings,
    Role,
    resolve_settings,
)
from srctl.edge import parse_agent, parse_label
from srctl.errors import UsageError
from srctl.main import build_parser, main


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def settings_for(
    argv: list[str], env: dict[str, str] | None = None, role: Role = Role.OPERATOR
) -> ConnectionSettings:
    return resolve_settings(parse(argv), env or {}, role)


@pytest.mark.parametrize(
    "argv",
    [
        ["--server", "core:1", "-o", "json", "pollers", "list"],
        ["pollers", "--server", "core:1", "-o", "json", "list"],
        ["pollers", "list", "--server", "core:1", "-o", "json"],
        ["-o", "json", "pollers", "list", "--server=core:1"],
    ],
)
def test_global_flags_are_accepted_before_or_after_noun_and_verb(argv: list[str]) -> None:
    args = parse(argv)
    assert args.output == "json"
    assert resolve_settings(args, {}, Role.OPERATOR).server == "core:1"


def test_defaults_without_flags_or_environment() -> None:
    settings = settings_for(["cluster", "status"])
    assert settings == ConnectionSettings(
        server=DEFAULT_SERVER,
        cacert=None,
        cert=None,
        key=None,
        token=None,
        timeout=DEFAULT_TIMEOUT,
        tls_server_name=None,
        plaintext=False,
    )


def test_environment_fills_in_for_absent_flags(data_dir: Path) -> None:
    pki = data_dir / "pki"
    env = {
        "SRCTL_SERVER": "env-core:9",
        "SRCTL_TOKEN": "s3cret",
        "SRCTL_CACERT": str(pki / "ca.pem"),
        "SRCTL_CERT": str(pki / "operator.pem"),
        "SRCTL_KEY": str(pki / "operator-key.pem"),
    }
    settings = settings_for(["cluster", "status"], env)
    assert settings.server == "env-core:9"
    assert settings.token == "s3cret"
    assert settings.cacert == pki / "ca.pem"
    assert settings.cert == pki / "operator.pem"
    assert settings.key == pki / "operator-key.pem"


def test_flags_win_over_environment() -> None:
    env = {"SRCTL_SERVER": "env-core:9", "SRCTL_TOKEN": "from-env"}
    settings = settings_for(["cluster", "status", "--server", "flag:1", "--token", "t"], env)
    assert (settings.server, settings.token) == ("flag:1", "t")


def test_data_dir_gives_operator_pki_to_admin_commands(data_dir: Path) -> None:
    settings = settings_for(["--data-dir", str(data_dir), "pollers", "list"])
    pki = data_dir / "pki"
    assert (settings.cacert, settings.cert, settings.key) == (
        pki / "ca.pem",
        pki / "operator.pem",
        pki / "operator-key.pem",
    )


def test_data_dir_gives_demo_edge_pki_to_edge_commands(data_dir: Path) -> None:
    argv = ["edge", "register", "--poller", "demo", "--partition", "dc1"]
    settings = settings_for(argv, {"SRCTL_DATA_DIR": str(data_dir)}, Role.EDGE)
    pki = data_dir / "pki"
    assert (settings.cacert, settings.cert, settings.key) == (
        pki / "ca.pem",
        pki / "edge-default-demo.pem",
        pki / "edge-default-demo-key.pem",
    )


def test_explicit_files_win_over_data_dir(data_dir: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "mine.pem", tmp_path / "mine-key.pem"
    cert.write_text("c")
    key.write_text("k")
    argv = ["--data-dir", str(data_dir), "edge", "register", "--poller", "p", "--partition", "dc1"]
    settings = settings_for([*argv, "--cert", str(cert), "--key", str(key)], role=Role.EDGE)
    assert (settings.cacert, settings.cert, settings.key) == (data_dir / "pki" / "ca.pem", cert, key)


def test_missing_certificate_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_text("ca")
    with pytest.raises(UsageError, match=r"client certificate file not found: .*operator\.pem"):
        settings_for(["--data-dir", str(tmp_path), "cluster", "status"])


def test_cert_without_key_is_a_usage_error(data_dir: Path) -> None:
    with pytest.raises(UsageError, match="--cert and --key must be given together"):
        settings_for(["cluster", "status", "--cert", str(data_dir / "pki" / "operator.pem")])


def test_main_exits_2_and_names_the_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["cluster", "status", "--data-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"CA certificate file not found: {tmp_path / 'pki' / 'ca.pem'}" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["pollers"],
        ["pollers", "list", "--state", "sleepy"],
        ["pollers", "list", "--page-size", "0"],
        ["pollers", "list", "-o", "xml"],
        ["cluster", "status", "--timeout", "0"],
        ["cluster", "status", "--timeout", "nan"],
        ["cluster", "status", "--timeout", "soon"],
        ["pollers", "list", "--page-size", "1001"],
        ["pollers", "list", "--page-size", "ten"],
        ["edge", "health", "--poller", "demo", "--session", "s", "--interval", "-1"],
        ["edge", "register", "--poller", "demo"],
        ["edge", "health", "--poller", "demo"],
        ["edge", "health", "--poller", "demo", "--session", "s", "--register"],
        ["edge", "health", "--poller", "demo", "--session", "s", "--status", "fine"],
        ["edge", "health", "--poller", "demo", "--session", "s", "--count", "0"],
        ["edge", "register", "--poller", "demo", "--partition", "dc1", "--label", "novalue"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: srctl" in capsys.readouterr().err


def test_register_flag_needs_partition(capsys: pytest.CaptureFixture[str]) -> None:
    # Checked before any connection is made, so no server is needed.
    assert main(["edge", "health", "--poller", "demo", "--register", "--plaintext"]) == 2
    assert "--partition is required with --register" in capsys.readouterr().err


def test_root_help_teaches_exit_codes_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("exit codes:", "3  could not reach the server", "SRCTL_DATA_DIR", "examples:"):
        assert text in out


@pytest.mark.parametrize(
    "argv",
    [
        ["cluster", "status"],
        ["pollers", "list"],
        ["pollers", "get"],
        ["edge", "register"],
        ["edge", "health"],
    ],
)
def test_every_verb_help_has_an_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"srctl {' '.join(argv)}" in out


def test_pollers_list_arguments() -> None:
    args = parse(["pollers", "list", "--state", "degraded", "--page-size", "50", "--no-all"])
    assert (args.state, args.page_size, args.all) == ("degraded", 50, False)
    assert parse(["pollers", "list"]).all is True


def test_edge_register_arguments() -> None:
    args = parse(
        [
            "edge",
            "register",
            "--poller",
            "demo",
            "--partition",
            "dc1",
            "--capability",
            "sweep",
            "--capability",
            "icmp",
            "--agent",
            "a1:icmp,tcp",
            "--agent",
            "a2",
            "--label",
            "site=ams",
            "--label",
            "note=a=b",
        ]
    )
    assert args.capability == ["sweep", "icmp"]
    assert [(a.agent_id, list(a.capabilities)) for a in args.agent] == [
        ("a1", ["icmp", "tcp"]),
        ("a2", []),
    ]
    assert dict(args.label) == {"site": "ams", "note": "a=b"}


@pytest.mark.parametrize(
    ("text", "agent_id", "capabilities"),
    [
        ("a1", "a1", []),
        ("a1:icmp", "a1", ["icmp"]),
        ("a1:icmp,,tcp", "a1", ["icmp", "tcp"]),
        ("rack:7:snmp", "rack:7", ["snmp"]),
        ("rack:7:", "rack:7", []),
    ],
)
def test_parse_agent(text: str, agent_id: str, capabilities: list[str]) -> None:
    assert parse_agent(text) == edge_pb.AgentInfo(agent_id=agent_id, capabilities=capabilities)


@pytest.mark.parametrize("text", ["", ":icmp"])
def test_parse_agent_rejects_empty_id(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_agent(text)


def test_parse_label_rejects_missing_key() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_label("=v")


def test_edge_health_statuses() -> None:
    args = parse(
        [
            "edge",
            "health",
            "--poller",
            "demo",
            "--session",
            "s1",
            "--status",
            "degraded",
            "--agent-status",
            "a1=down",
        ]
    )
    assert args.status == edge_pb.COMPONENT_STATUS_DEGRADED
    assert args.agent_status == [("a1", edge_pb.COMPONENT_STATUS_DOWN)]
    assert parse(["edge", "health", "--poller", "p", "--register"]).status == (edge_pb.COMPONENT_STATUS_OK)
