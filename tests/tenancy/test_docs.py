"""docs/security.md prints the permission matrix; this keeps the page and the data equal."""

from __future__ import annotations

from pathlib import Path

from srcore.security.rbac import MATRIX, Role

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BEGIN, END = "<!-- permission-matrix:begin -->", "<!-- permission-matrix:end -->"
COLUMNS = (Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.PLATFORM_ADMIN, Role.PACKAGE_DOWNLOAD)


def render_matrix() -> str:
    """The matrix as a Markdown table, one row per RPC in service order."""
    lines = [
        "| RPC | " + " | ".join(role.value for role in COLUMNS) + " | audited |",
        "|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for method, rule in MATRIX.items():
        name = method.removeprefix("/serviceradar.admin.v1.")
        cells = ["yes" if role in rule.roles else "" for role in COLUMNS]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {'always' if rule.mutates else 'denials'} |")
    return "\n".join(lines)


def test_security_doc_prints_the_matrix_as_enforced() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} lacks the {BEGIN} ... {END} section"
    printed = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    expected = render_matrix()
    assert printed == expected, f"docs/security.md is stale; the matrix section should read:\n\n{expected}\n"
