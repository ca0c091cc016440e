"""The ``distilvit data report`` HTML page, opened in headless Chromium, renders its plots and thumbnails.

A copy of ``report.html`` next to the original gets a small script that, once the page has loaded, writes
``[src, naturalWidth]`` of every image into the DOM; Chromium's ``--dump-dom`` prints it. Without Chromium the
test skips; ``DISTILVIT_REQUIRE_BROWSER=1`` (set by .ci/run) turns the skip into a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from datatools_fixtures import make_sources

from distilvit.cli.main import main

REQUIRED = os.environ.get("DISTILVIT_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PROBE = """<script>
window.addEventListener("load", () => {
  const found = [...document.images].map(image => [image.getAttribute("src"), image.naturalWidth]);
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "the report page test needs Chromium (apt-get install chromium)"
        if REQUIRED:
            pytest.fail(message + " (DISTILVIT_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return path


def test_report_page_renders_its_plots_and_thumbnails_in_chromium(tmp_path):
    browser = chromium()
    a, b = make_sources(tmp_path / "src")
    out = tmp_path / "report"
    assert main(["data", "report", "--dataset", str(a), str(b), "--out", str(out), "--worst", "4"]) == 0
    page = (out / "report.html").read_text()
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--allow-file-access-from-files", "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="image-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert match, f"no image report in the DOM (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    images = dict(json.loads(html.unescape(match.group(1))))
    plots = {"plots/length_histogram.png", "plots/lorenz.png", "plots/rank_frequency.png"}
    assert plots <= set(images)
    assert sum(src.startswith("thumbs/") for src in images) == 4
    assert all(width > 0 for width in images.values()), images  # every image decoded and laid out
