"""`distilvit --version` and `--help` answer at once: the parser is built from light modules only.

The robust check is what gets imported (no torch, transformers, datasets, ... before the arguments are parsed);
the timing check, with a generous bound, catches a slow start the import check would not name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distilvit import __version__
from distilvit.cli.main import COMMANDS

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("torch", "transformers", "datasets", "peft", "numpy", "PIL", "onnxruntime", "fastapi", "gradio")


def _python(code_or_args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, env=env, timeout=120)


_PROBE = """
import json, sys
from distilvit.cli.main import build_parser
parser = build_parser()
for argv in {argvs!r}:
    try:
        parser.parse_args(argv)
    except SystemExit:
        pass
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def test_parsing_every_help_imports_no_heavy_library():
    argvs = [["--version"], ["--help"]] + [[command, "--help"] for command in COMMANDS]
    result = _python(["-c", _PROBE.format(argvs=argvs, heavy=HEAVY)])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("argv,expected", [(["--version"], f"distilvit {__version__}"), (["--help"], "COMMAND")])
def test_version_and_help_are_fast(argv, expected):
    _python(["-c", "pass"])  # warm the file cache, so that the bound measures distilvit's own start
    start = time.perf_counter()
    result = _python(["-m", "distilvit.cli.main", *argv])
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert seconds < 1.5, f"distilvit {' '.join(argv)} took {seconds:.2f} s"
