"""Exit codes: the mapping from gRPC status, and what main() returns on each failure."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import grpc
import pytest

from srctl.connection import Client
from srctl.errors import ExitCode, exit_code_for, report_rpc_error
from srctl.main import main


class StatusError(grpc.RpcError):
    """An RpcError as a failed call raises it: with a status code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


EXPECTED = {
    grpc.StatusCode.UNAVAILABLE: 3,
    grpc.StatusCode.DEADLINE_EXCEEDED: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.UNAUTHENTICATED: 5,
    grpc.StatusCode.PERMISSION_DENIED: 5,
}


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_exit_code_for_every_status(code: grpc.StatusCode) -> None:
    assert exit_code_for(code) == EXPECTED.get(code, 1)


def test_report_prints_status_name_and_details() -> None:
    stream = io.StringIO()
    error = StatusError(grpc.StatusCode.INVALID_ARGUMENT, "partition: required")
    assert report_rpc_error(error, stream) == ExitCode.SERVER_ERROR
    assert stream.getvalue() == "Error: INVALID_ARGUMENT: partition: required\n"


def test_report_survives_an_error_without_status() -> None:
    stream = io.StringIO()
    assert report_rpc_error(grpc.RpcError(), stream) == ExitCode.SERVER_ERROR
    assert stream.getvalue() == "Error: UNKNOWN: no details\n"


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.NOT_FOUND, 4),
        (grpc.StatusCode.PERMISSION_DENIED, 5),
        (grpc.StatusCode.UNAUTHENTICATED, 5),
        (grpc.StatusCode.FAILED_PRECONDITION, 1),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 1),
    ],
)
def test_main_returns_the_exit_code_of_a_failed_call(
    code: grpc.StatusCode,
    exit_code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(self: Client, method: object, request: object) -> object:
        raise StatusError(code, "it went wrong")

    monkeypatch.setattr(Client, "call", fail)
    assert main(["pollers", "get", "demo", "--plaintext"]) == exit_code
    captured = capsys.readouterr()
    assert captured.err == f"Error: {code.name}: it went wrong\n"
    assert captured.out == ""


def test_main_returns_130_on_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(self: Client, method: object, request: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "call", interrupt)
    assert main(["cluster", "status", "--plaintext"]) == 130


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never says anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("tls", [True, False])
def test_unreachable_server_exits_3(tls: bool, closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cluster", "status", "--server", f"127.0.0.1:{closed_port}", "--timeout", "5"]
    assert main(argv if tls else [*argv, "--plaintext"]) == 3
    assert capsys.readouterr().err.startswith("Error: UNAVAILABLE: ")


def test_deadline_exceeded_exits_3(silent_server: int, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pollers", "list", "--server", f"127.0.0.1:{silent_server}", "--timeout", "0.3"]
    assert main(argv) == 3
    assert capsys.readouterr().err.startswith("Error: DEADLINE_EXCEEDED: ")
