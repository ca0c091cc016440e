"""README.md's server error table lists exactly the error codes the API can answer with, and those are
exactly the codes raised in ``distilvit.serving`` (read from the source), so neither can drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")  # an optional dependency (the serve extra), not distilvit's own module
from distilvit.serving.errors import ERROR_CODES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "src" / "distilvit" / "serving"
ROW = re.compile(r"^\|(?P<what>.*)\|\s*(?:(?P<status>\d{3})\s+)?`(?P<code>[a-z_]+)`\s*\|\s*$")


def readme_error_table() -> dict[str, int | None]:
    """``code -> status`` from the table after the `distilvit serve` section's "every error is JSON" line."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "every error is JSON" in line)
    table: dict[str, int | None] = {}
    for line in lines[start + 1:]:
        if not line.strip():
            if table:
                break
            continue
        match = ROW.match(line)
        if match:
            assert match["code"] not in table, f"README lists {match['code']} twice"
            table[match["code"]] = int(match["status"]) if match["status"] else None
    return table


def codes_in_source() -> dict[str, int | None]:
    """``code -> status`` of every ``APIError(status, "code", ...)``/``_json(status, "code", ...)`` call, the
    ``_CODES`` table and its fallback, in the serving package's source."""
    found: dict[str, int | None] = {}
    for path in sorted(SERVING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("APIError", "_json"):
                status, code = node.args[0], node.args[1]
                if isinstance(code, ast.Constant):
                    found[code.value] = status.value if isinstance(status, ast.Constant) else None
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_CODES":
                found.update({v.value: k.value for k, v in zip(node.value.keys, node.value.values)})
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and getattr(node.func.value, "id", None) == "_CODES"):
                found[node.args[1].value] = None  # any other status of the framework's HTTPException
    return found


def test_readme_table_matches_the_codes_of_errors_py():
    assert readme_error_table() == ERROR_CODES


def test_errors_py_lists_every_code_the_server_raises():
    assert codes_in_source() == ERROR_CODES
