"""The HTTP API (FastAPI): ``POST /caption``, ``GET /health``, OpenAPI docs at ``/docs``, and the
OpenAI-compatible ``POST /v1/chat/completions`` / ``GET /v1/models`` (:mod:`distilvit.serving.openai_api`).

:func:`create_app` wraps any backend with ``caption(images) -> list[str]`` (see :mod:`distilvit.serving.backend`).
Bad input always gets a 4xx with a JSON body ``{"error": code, "message": what was wrong and what to do}``;
a 5xx means the server or model failed (504: timeout, 503: queue full, 500: a bug).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from distilvit import __version__
from distilvit.serving.batching import MicroBatcher
from distilvit.serving.errors import ERROR_RESPONSES, install_error_handlers
from distilvit.serving.limits import APIError, ServeLimits
from distilvit.serving.openai_api import add_openai_routes
from distilvit.serving.uploads import check_content_type, decode_image

DESCRIPTION = """Caption images with a distilvit model.

Send `multipart/form-data` with one or more image files in the field **`images`**
(`curl -F images=@photo.jpg -F images=@other.png http://HOST:PORT/caption`). The API takes uploaded
bytes only: it never fetches URLs. Captions come back in upload order.

Errors are JSON `{"error": code, "message": ...}`: 400 undecodable image or malformed body,
413 body / image pixels / image count over the limit, 415 non-image content type, 422 no `images` field,
503 queue full, 504 timeout. Current limits: `GET /health`.

`POST /v1/chat/completions` answers conversations about an image in OpenAI's chat format (any OpenAI client with
`base_url="http://HOST:PORT/v1"`; images only as base64 `data:` URLs; `stream: true` for server-sent events);
its errors come in OpenAI's shape `{"error": {"message", "type", "code"}}` with the same codes.
"""


class ImageCaption(BaseModel):
    filename: str | None
    width: int
    height: int
    caption: str


class Timing(BaseModel):
    decode_ms: float
    caption_ms: float
    total_ms: float


class CaptionResponse(BaseModel):
    captions: list[ImageCaption]
    timing: Timing
    batch_sizes: list[int]


def _require_multipart(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise APIError(
            415, "unsupported_media_type",
            f"the request is {media or 'without a content type'!r}; send multipart/form-data with the image "
            "files in the field 'images' (URLs and JSON bodies are not accepted).",
        )


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def create_app(backend, limits: ServeLimits | None = None) -> FastAPI:
    """A FastAPI app serving ``backend`` under ``limits`` (defaults: :class:`ServeLimits`)."""
    limits = limits or ServeLimits()
    batcher = MicroBatcher(backend.caption, max_batch_size=limits.max_batch_size,
                           batch_wait_ms=limits.batch_wait_ms, max_queue=limits.max_queue)

    batchers = [batcher]

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        for each in batchers:
            await each.start()
        yield
        for each in batchers:
            await each.stop()

    app = FastAPI(title="distilvit captioning API", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.backend, app.state.batcher, app.state.limits = backend, batcher, limits
    install_error_handlers(app, limits)
    chat_batcher = add_openai_routes(app, backend, limits)
    batchers += [chat_batcher] if chat_batcher is not None else []

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/health", summary="model, limits and batching statistics")
    async def health() -> dict:
        return {"status": "ok", "model": backend.describe(), "limits": limits.as_dict(), "batching": batcher.stats(),
                "chat_batching": chat_batcher.stats() if chat_batcher is not None else None}

    @app.post(
        "/caption", response_model=CaptionResponse, responses=ERROR_RESPONSES, summary="caption uploaded images",
        dependencies=[Depends(_require_multipart)], max_body_size=limits.max_upload_bytes,
        form_limits={"max_files": max(1000, limits.max_images + 1)},
    )
    async def caption(
        images: Annotated[list[UploadFile], File(description="one or more image files (repeat the field)")],
    ) -> CaptionResponse:
        start = time.perf_counter()
        if len(images) > limits.max_images:
            raise APIError(413, "too_many_images", f"{len(images)} images in one request; the limit is "
                           f"{limits.max_images}. Split them over several requests.")
        for index, upload in enumerate(images):
            check_content_type(upload.content_type, index, upload.filename)
        payloads = [await upload.read() for upload in images]
        decoded = await run_in_threadpool(
            lambda: [decode_image(data, max_pixels=limits.max_pixels, index=i, filename=upload.filename)
                     for i, (data, upload) in enumerate(zip(payloads, images))]
        )
        decode_ms = _elapsed_ms(start)
        try:
            results = await asyncio.wait_for(batcher.caption(decoded), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            raise APIError(504, "timeout", f"the captions were not ready within {limits.timeout_s:g} s (the "
                           "server is busy or the images are many); retry later or send fewer images.") from None
        captions = [
            ImageCaption(filename=upload.filename, width=image.width, height=image.height, caption=text)
            for upload, image, (text, _) in zip(images, decoded, results)
        ]
        total_ms = _elapsed_ms(start)
        timing = Timing(decode_ms=decode_ms, caption_ms=round(total_ms - decode_ms, 2), total_ms=total_ms)
        return CaptionResponse(captions=captions, timing=timing, batch_sizes=[size for _, size in results])

    return app
