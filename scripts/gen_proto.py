#!/usr/bin/env python3
"""Generate gen/ from proto/: protobuf and gRPC modules plus mypy-protobuf stubs.

`python scripts/gen_proto.py` rewrites gen/; `--check` regenerates into a temporary
directory and exits 1 when gen/ differs, so CI catches a stale or hand-edited gen/.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = ROOT / "gen"
# The mypy-protobuf plugins live beside the interpreter, which may not be on PATH.
BIN = Path(sys.executable).parent


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into `out`."""
    protos = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO, capture_output=True)
    # The same contract with its comments, for server reflection: generated Python modules
    # carry no source info, so `grpcurl describe` would show no documentation without it.
    contract = out / "serviceradar" / "contract.binpb"
    contract.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--descriptor_set_out={contract}",
         "--include_source_info", *protos],
        check=True, cwd=PROTO, capture_output=True,
    )  # fmt: skip
    for directory in [p for p in out.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()
    (out / "serviceradar" / "py.typed").touch()


def differences(left: Path, right: Path) -> list[str]:
    """Paths (relative) that differ between two trees, ignoring caches."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        for name in cmp.left_only + cmp.right_only + cmp.diff_files:
            if name != "__pycache__":
                found.append(prefix + name)
        for name, sub in cmp.subdirs.items():
            if name != "__pycache__":
                walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right), "")
    return found


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when gen/ is stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "gen"
            generate(fresh)
            stale = differences(fresh, GEN) if GEN.exists() else ["gen/ (missing)"]
        if stale:
            print("gen/ is stale; run scripts/gen_proto.py. Differs:", *stale, sep="\n  ")
            return 1
        print("gen/ is up to date")
        return 0
    if GEN.exists():
        shutil.rmtree(GEN)
    generate(GEN)
    print(f"generated {GEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
