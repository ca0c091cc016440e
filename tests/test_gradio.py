"""The Gradio page (`distilvit gradio`): a local launch answered through gradio_client, offline settings,
bad images shown as errors instead of reaching the model (one log line each, no traceback), and the uploads
folder removed when the page closes (close(), SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image
from serving_helpers import RecordingBackend, encode, free_port, make_model_dir, png_with_header_size

pytest.importorskip("gradio")  # the optional serve extra; distilvit's own module below is imported plainly
from gradio_client import Client, handle_file  # noqa: E402

from distilvit.serving import gradio_app, load_backend  # noqa: E402


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_encoder, tiny_lm):
    """A launched page for a tiny PyTorch model: ``(client, backend)``."""
    model = make_model_dir(tmp_path_factory.mktemp("gradio-model"), tiny_encoder, tiny_lm)
    backend = load_backend(model, max_new_tokens=4)
    demo = gradio_app.launch(backend, port=free_port(), block=False, quiet=True, max_pixels=100_000)
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    yield client, backend
    demo.close()


def test_gradio_never_phones_home():
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    demo = gradio_app.build_demo(RecordingBackend())
    assert demo.analytics_enabled is False


def test_an_image_in_its_caption_out(page, tmp_path):
    client, backend = page
    path = tmp_path / "red.png"
    path.write_bytes(encode((40, 30)))
    caption = client.predict(handle_file(str(path)), api_name="/caption")
    assert caption == backend.caption([Image.open(path).convert("RGB")])[0]


@pytest.mark.parametrize("name,data,message", [
    ("bomb.png", png_with_header_size(40_000, 40_000), "too large"),
    ("big.png", encode((400, 300)), "limit is 100,000 pixels"),
    ("junk.png", b"definitely not an image", "cannot decode"),
])
def test_bad_images_show_an_error(page, tmp_path, name, data, message, caplog, capfd):
    client, _ = page
    path = tmp_path / name
    path.write_bytes(data)
    capfd.readouterr()
    with caplog.at_level("WARNING", logger="distilvit.serving"):
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(path)), api_name="/caption")
    rejected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected upload")]
    assert len(rejected) == 1 and message in rejected[0] and "\n" not in rejected[0]
    assert "Traceback" not in capfd.readouterr().err


def test_urls_are_refused_not_fetched(page):
    client, _ = page
    with pytest.raises(Exception, match="does not fetch URLs"):
        client.predict(handle_file("http://example.invalid/cat.png"), api_name="/caption")


def _files(folder) -> list[Path]:
    return [path for path in Path(folder).rglob("*") if path.is_file()]


def test_uploads_live_in_a_private_folder_removed_on_close(tmp_path):
    demo = gradio_app.launch(RecordingBackend(), port=free_port(), block=False, quiet=True)
    folder = Path(demo.upload_dir)
    try:
        client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
        path = tmp_path / "upload.png"
        path.write_bytes(encode((20, 10)))
        assert client.predict(handle_file(str(path)), api_name="/caption") == "20x10"
        assert any(p.read_bytes() == path.read_bytes() for p in _files(folder))  # the upload landed there
    finally:
        demo.close()
    assert not folder.exists() and os.environ.get("GRADIO_TEMP_DIR") != str(folder)


_SERVE = """
import os, sys, tempfile
sys.path.insert(0, {tests!r})
from serving_helpers import RecordingBackend
folder = {folder!r}
def private(prefix=None):
    os.makedirs(folder)
    return folder
tempfile.mkdtemp = private
from distilvit.serving import gradio_app
gradio_app.launch(RecordingBackend(), port={port}, block=True, quiet=True)
print("closed", flush=True)
"""


def test_sigterm_closes_the_page_and_removes_the_uploads(tmp_path):
    folder, port = tmp_path / "uploads", free_port()
    script = _SERVE.format(tests=str(Path(__file__).parent), folder=str(folder), port=port)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        client = None
        deadline = time.monotonic() + 120
        while client is None:
            assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1][-2000:]
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False,
                                download_files=False)
            except Exception:  # noqa: BLE001 -- not up yet
                time.sleep(0.5)
        path = tmp_path / "upload.png"
        path.write_bytes(encode((8, 6)))
        assert client.predict(handle_file(str(path)), api_name="/caption") == "8x6"
        assert _files(folder)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0 and "closed" in out, err[-2000:]
    assert not folder.exists()
