"""A Gradio page: an image in, its caption out (``distilvit gradio``).

Offline by design: Gradio's telemetry and version check are off (``GRADIO_ANALYTICS_ENABLED=False``, set
before gradio is imported, and ``analytics_enabled=False``), there is no share link, no server-side rendering
(it would start Node), and the theme uses system fonts (the default one makes the browser fetch web fonts).
Uploads are checked with the API server's rules (allowed formats, pixel count before decoding): Gradio's own
image preprocessing is off (``preprocess=False``; Gradio still checks that the file is an upload in its cache),
so a bad image shows the server's error message and never reaches the model. Like the API, the page takes
uploads only: Gradio would download an ``http(s)://`` path sent through its API, so the image component
refuses them (:func:`refuse_urls`). The event is exposed to ``gradio_client`` as ``/caption``.
A rejected upload is logged as one line (no traceback). Uploads are kept in a private temporary folder that is
removed when the page closes: on ``close()``, ctrl-c, SIGTERM or interpreter exit. Gradio reads its upload folder
from ``GRADIO_TEMP_DIR`` at every request, so :func:`launch` sets that variable until the page closes (one page
per process at a time).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import threading
import time

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # also over a user setting: the page promises no telemetry
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import gradio as gr

from distilvit.serving.limits import DEFAULT_MAX_PIXELS, MB, APIError
from distilvit.serving.uploads import SUPPORTED, decode_image

logger = logging.getLogger("distilvit.serving")

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


def caption_fn(backend, *, max_pixels: int):
    """The Gradio callback: uploaded file (Gradio ``FileData`` dict) -> caption; :class:`gradio.Error` for a
    missing or bad image."""

    def caption(upload: dict | None) -> str:
        if not upload or not upload.get("path"):
            raise gr.Error(f"Upload an image first ({SUPPORTED}).", print_exception=False)
        with open(upload["path"], "rb") as handle:
            data = handle.read()
        try:
            image = decode_image(data, max_pixels=max_pixels, filename=upload.get("orig_name"))
        except APIError as err:
            logger.warning("rejected upload (%s): %s", err.code, err.message)
            raise gr.Error(err.message, print_exception=False) from None
        return backend.caption([image])[0]

    return caption


def refuse_urls(component: gr.components.Component) -> None:
    """Make ``component`` reject file paths that are URLs instead of downloading them (uploads only)."""
    from gradio_client.utils import is_http_url_like

    def guard(path):
        if isinstance(path, str) and is_http_url_like(path):
            logger.warning("rejected upload: a URL (%.100s); only uploads are captioned", path)
            raise gr.Error("This app captions uploaded images only; it does not fetch URLs. Upload the file.",
                           print_exception=False)
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
    """Serve the page on ``host:port`` (never a public share link). ``block=False`` returns once it is up; the
    caller's ``demo.close()`` then removes the uploads folder (``demo.upload_dir``). ``block=True`` serves until
    ctrl-c or SIGTERM, then closes the page and removes the folder."""
    upload_dir = tempfile.mkdtemp(prefix="distilvit-gradio-")
    remove = _remover(upload_dir)
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = upload_dir
    try:
        demo = build_demo(backend, max_pixels=max_pixels)
        demo.queue(default_concurrency_limit=1)
        demo.launch(
            server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
            quiet=quiet, ssr_mode=False, max_file_size=max_upload_bytes, enable_monitoring=False, mcp_server=False,
            footer_links=["api"], show_error=True,
            theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
        )
    except BaseException:
        _restore_temp_dir(upload_dir, previous)
        remove()
        raise
    demo.upload_dir = upload_dir
    close = demo.close

    def close_and_remove(verbose: bool = True) -> None:
        close(verbose)
        _restore_temp_dir(upload_dir, previous)
        remove()

    demo.close = close_and_remove
    if block:
        _serve_until_stopped(demo)
    return demo


def _remover(folder: str):
    """A function that removes ``folder`` (once, quietly), also registered to run at interpreter exit."""

    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return remove


def _restore_temp_dir(folder: str, previous: str | None) -> None:
    """Put ``GRADIO_TEMP_DIR`` back as it was before ``folder`` was set (unless another page set it since)."""
    if os.environ.get("GRADIO_TEMP_DIR") != folder:
        return
    if previous is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = previous


def _serve_until_stopped(demo: gr.Blocks) -> None:
    """Block until ctrl-c or SIGTERM (turned into ``KeyboardInterrupt``), then close the page."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        while demo.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close(verbose=False)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
