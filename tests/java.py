"""Java for the caption metrics' PTB tokenizer and METEOR: tests that need it are marked ``@needs_java``.

Without Java such a test skips on a developer's machine. Under CI (``CI=true``, or ``DISTILVIT_REQUIRE_JAVA=1``
as ``.ci/run`` sets) it fails instead (``tests/conftest.py``), so the comparisons with pycocoevalcap and the
PTB-tokenizer tests can never silently stop running there.
"""

from __future__ import annotations

import os
import shutil

import pytest

HAVE_JAVA = shutil.which("java") is not None
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("DISTILVIT_REQUIRE_JAVA") == "1"
needs_java = pytest.mark.needs_java


def check_java(item) -> None:
    """Skip (or, under CI, fail) a ``needs_java`` test when no Java runtime is on PATH."""
    if HAVE_JAVA or item.get_closest_marker("needs_java") is None:
        return
    if REQUIRED:
        pytest.fail("Java runtime not installed, but CI requires the Java metric tests to run "
                    "(apt-get install default-jre-headless)", pytrace=False)
    pytest.skip("Java runtime not installed")
