"""The Gradio page (`distilvit gradio`): a local launch answered through gradio_client, offline settings,
and bad images shown as errors instead of reaching the model."""

from __future__ import annotations

import os

import pytest
from PIL import Image
from serving_helpers import RecordingBackend, encode, free_port, make_model_dir, png_with_header_size

gradio_app = pytest.importorskip("distilvit.serving.gradio_app")
from gradio_client import Client, handle_file

from distilvit.serving import load_backend


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
def test_bad_images_show_an_error(page, tmp_path, name, data, message):
    client, _ = page
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(path)), api_name="/caption")


def test_urls_are_refused_not_fetched(page):
    client, _ = page
    with pytest.raises(Exception, match="does not fetch URLs"):
        client.predict(handle_file("http://example.invalid/cat.png"), api_name="/caption")
