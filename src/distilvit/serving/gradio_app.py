"""A Gradio page: an image in, its caption out (``distilvit gradio``).

Offline by design: Gradio's telemetry and version check are off (``GRADIO_ANALYTICS_ENABLED=False``, set
before gradio is imported, and ``analytics_enabled=False``), there is no share link, no server-side rendering
(it would start Node), and the theme uses system fonts (the default one makes the browser fetch web fonts).
Uploads are checked with the API server's rules (allowed formats, pixel count before decoding): Gradio's own
image preprocessing is off (``preprocess=False``; Gradio still checks that the file is an upload in its cache),
so a bad image shows the server's error message and never reaches the model. Like the API, the page takes
uploads only: Gradio would download an ``http(s)://`` path sent through its API, so the image component
refuses them (:func:`refuse_urls`). The event is exposed to ``gradio_client`` as ``/caption``.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # also over a user setting: the page promises no telemetry
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import gradio as gr

from distilvit.serving.limits import DEFAULT_MAX_PIXELS, MB, APIError
from distilvit.serving.uploads import SUPPORTED, decode_image

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


def caption_fn(backend, *, max_pixels: int):
    """The Gradio callback: uploaded file (Gradio ``FileData`` dict) -> caption; :class:`gradio.Error` for a
    missing or bad image."""

    def caption(upload: dict | None) -> str:
        if not upload or not upload.get("path"):
            raise gr.Error(f"Upload an image first ({SUPPORTED}).")
        with open(upload["path"], "rb") as handle:
            data = handle.read()
        try:
            image = decode_image(data, max_pixels=max_pixels, filename=upload.get("orig_name"))
        except APIError as err:
            raise gr.Error(err.message) from None
        return backend.caption([image])[0]

    return caption


def refuse_urls(component: gr.components.Component) -> None:
    """Make ``component`` reject file paths that are URLs instead of downloading them (uploads only)."""
    from gradio_client.utils import is_http_url_like

    def guard(path):
        if isinstance(path, str) and is_http_url_like(path):
            raise gr.Error("This app captions uploaded images only; it does not fetch URLs. Upload the file.")
        return path

    move, move_async = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    async def checked_async(path):
        return await move_async(guard(path))

    component.move_resource_to_block_cache = lambda path: move(guard(path))
    component.async_move_resource_to_block_cache = checked_async


def _describe(backend) -> str:
    facts = backend.describe()
    shown = ", ".join(f"{k}: `{v}`" for k, v in facts.items() if k in ("backend", "path", "quantization") and v)
    return f"# distilvit captioner\nUpload an image to get its caption. Model: {shown}."


def build_demo(backend, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> gr.Blocks:
    """The page for ``backend`` (anything with ``caption(images) -> list[str]`` and ``describe() -> dict``)."""
    with gr.Blocks(title="distilvit captioner", analytics_enabled=False) as demo:
        gr.Markdown(_describe(backend))
        with gr.Row():
            image = gr.Image(type="filepath", label="image", sources=["upload", "clipboard"])
            refuse_urls(image)
            caption = gr.Textbox(label="caption", lines=3, buttons=["copy"])
        button = gr.Button("Caption", variant="primary")
        fn = caption_fn(backend, max_pixels=max_pixels)
        # one model call at a time: the backend is not re-entrant; Gradio's queue orders the rest
        events = {"fn": fn, "inputs": image, "outputs": caption, "preprocess": False, "concurrency_limit": 1,
                  "concurrency_id": "caption"}
        button.click(api_name="caption", **events)
        image.upload(api_visibility="private", **events)
    return demo


def launch(backend, *, host: str = "127.0.0.1", port: int = 7860, max_pixels: int = DEFAULT_MAX_PIXELS,
           max_upload_bytes: int = 20 * MB, block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Serve the page on ``host:port`` (never a public share link). ``block=False`` returns once it is up."""
    demo = build_demo(backend, max_pixels=max_pixels)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        quiet=quiet, ssr_mode=False, max_file_size=max_upload_bytes, enable_monitoring=False, mcp_server=False,
        footer_links=["api"], show_error=True,
        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
    )
    return demo
