"""The CI guard of tests/java.py: without Java, a Java metric test skips locally and fails under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JAVA_TEST = "tests/test_evaluation_tokenize.py::test_fallback_matches_java_ptb_tokenizer"


def _run_without_java(tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"  # PATH holds only this interpreter: no java on it
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DISTILVIT_REQUIRE_JAVA")}
    env.update(PATH=str(bin_dir), **extra_env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", JAVA_TEST], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_java_test_skips_without_java_outside_ci(tmp_path):
    result = _run_without_java(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "Java runtime not installed" in result.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"DISTILVIT_REQUIRE_JAVA": "1"}])
def test_java_test_fails_without_java_under_ci(tmp_path, env):
    result = _run_without_java(tmp_path, **env)
    assert result.returncode != 0
    assert "CI requires the Java metric tests to run" in result.stdout
    assert "skipped" not in result.stdout
