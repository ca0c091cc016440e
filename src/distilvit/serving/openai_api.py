"""OpenAI-compatible routes: ``POST /v1/chat/completions`` (plain or ``stream: true``) and ``GET /v1/models``.

Mounted by :func:`distilvit.serving.app.create_app`. Any OpenAI client works against ``http://HOST:PORT/v1``:
messages are strings or lists of ``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url":
{"url": "data:image/png;base64,..."}}`` parts (one image per conversation, placed where its part stands). Images
must be inline base64 ``data:`` URLs: any other URL is refused with 400 and never fetched
(:mod:`distilvit.serving.data_urls`). Requests share the limits of ``POST /caption`` (body bytes, pixels, image
count; :class:`~distilvit.serving.limits.ServeLimits`), its timeout and queue, and are micro-batched the same
way: concurrent conversations with the same decoding options run in one batched ``generate`` call.

Errors use the codes and messages of ``/caption`` in OpenAI's error shape ``{"error": {"message", "type", "code",
"param"}}`` (see :func:`distilvit.serving.errors.error_body` for why). Decoding: greedy unless ``temperature``
> 0 or ``top_p`` < 1 ask for sampling; ``max_tokens``/``max_completion_tokens`` default to the server's
``--max-new-tokens`` (else the model's 40); ``seed`` makes sampling repeatable; the ``model`` field is not
checked (the server has one model, named in the answer and by ``GET /v1/models``). A model that cannot take
prompts (an ONNX bundle) answers 501 ``chat_not_supported``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from distilvit.errors import DistilViTError
from distilvit.serving.batching import MicroBatcher
from distilvit.serving.data_urls import decode_data_url
from distilvit.serving.errors import error_body
from distilvit.serving.limits import APIError, ServeLimits

logger = logging.getLogger("distilvit.serving")

MAX_TOKENS = 4096  # the largest max_tokens a request may ask for


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat request that this server reads; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    error: ErrorDetail


def _responses(**descriptions: str) -> dict:
    return {int(status[1:]): {"model": OpenAIErrorBody, "description": text} for status, text in descriptions.items()}


ERROR_RESPONSES = _responses(
    s400="invalid_chat_request, image_url_not_allowed (not a data: URL; never fetched), invalid_data_url, "
         "undecodable_image, empty_image",
    s413="request_too_large, image_too_large, too_many_images (more than one image)",
    s415="unsupported_media_type (a data: URL that is not image/*)",
    s501="chat_not_supported (the served model cannot take prompts: an ONNX bundle)",
    s503="overloaded (queue full; retry)", s504="timeout",
)


def request_schema() -> dict:
    """The JSON schema of :class:`ChatRequest` with its ``$defs`` inlined (for the OpenAPI page at ``/docs``)."""
    schema = ChatRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return inline(schema)


def _invalid(message: str) -> APIError:
    return APIError(400, "invalid_chat_request", message)


def parse_request(raw: bytes) -> ChatRequest:
    """The validated request, or 400 ``invalid_chat_request`` saying which field is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise _invalid(f"the request body is not JSON ({err}); send an OpenAI chat request "
                       '({"model": ..., "messages": [...]}) with Content-Type: application/json.') from None
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:5])
        raise _invalid(f"not a valid chat request ({problems}).") from None
    if request.stop:
        raise _invalid("'stop' sequences are not supported by this server; leave them out.")
    return request


def image_parts(request: ChatRequest) -> list[str]:
    """The URLs of every image part, in order."""
    return [part.image_url.url for message in request.messages if isinstance(message.content, list)
            for part in message.content if isinstance(part, ImagePart)]


def conversation(request: ChatRequest) -> list[dict]:
    """Messages as ``{"role", "content": [text or None (the image), ...]}`` for the backend's ``prepare_chat``."""
    messages = []
    for index, message in enumerate(request.messages):
        parts = message.content if isinstance(message.content, list) else [message.content or ""]
        content = [part if isinstance(part, str) else part.text if isinstance(part, TextPart) else None
                   for part in parts]
        if message.role != "user" and None in content:
            raise _invalid(f"messages.{index} ({message.role}) holds an image; images go in user messages.")
        messages.append({"role": "system" if message.role == "developer" else message.role, "content": content})
    return messages


def generation_options(request: ChatRequest, default_max_tokens: int | None) -> dict:
    options: dict = {"num_beams": 1}
    max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
    if max_tokens is not None:
        options["max_new_tokens"] = max_tokens
    sample = (request.temperature or 0) > 0 or (request.top_p is not None and request.top_p < 1)
    if sample:
        options.update(do_sample=True, temperature=request.temperature or 1.0)
        if request.top_p is not None:
            options["top_p"] = request.top_p
    if request.seed is not None and sample:
        options["seed"] = request.seed
    return options


def model_name(backend) -> str:
    path = getattr(backend, "path", None)
    return Path(path).name if path else "distilvit"


def completion(reply, *, ident: str, created: int, model: str) -> dict:
    """An OpenAI ``chat.completion`` object for ``reply`` (a ``distilvit.model.chat.Reply``)."""
    return {
        "id": ident, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                     "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": usage(reply),
    }


def usage(reply) -> dict:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def chunk(ident: str, created: int, model: str, delta: dict | None, finish_reason: str | None = None,
          usage_: dict | None = None) -> str:
    """One server-sent event holding a ``chat.completion.chunk``."""
    body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                                  "logprobs": None}]}
    if usage_ is not None:
        body["usage"] = usage_
    return f"data: {json.dumps(body)}\n\n"


def add_openai_routes(app: FastAPI, backend, limits: ServeLimits) -> MicroBatcher | None:
    """Add ``/v1/chat/completions`` and ``/v1/models`` to ``app``; returns the chat micro-batcher to start and
    stop with the app (``None`` when ``backend`` cannot chat: the route then answers 501)."""
    can_chat = callable(getattr(backend, "chat", None)) and callable(getattr(backend, "prepare_chat", None))
    batcher = MicroBatcher(backend.chat, max_batch_size=limits.max_batch_size, batch_wait_ms=limits.batch_wait_ms,
                           max_queue=limits.max_queue) if can_chat else None
    name = model_name(backend)
    default_max_tokens = (getattr(backend, "generation", None) or {}).get("max_new_tokens")
    started = int(time.time())

    @app.get("/v1/models", summary="the served model (OpenAI format)")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": started, "owned_by": "distilvit"}]}

    @app.post("/v1/chat/completions", summary="answer a conversation about an image (OpenAI chat format)",
              max_body_size=limits.max_upload_bytes, response_model=None, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": request_schema()}}}})
    async def chat_completions(request: Request):
        start = time.perf_counter()
        if batcher is None:
            raise APIError(501, "chat_not_supported", "this model cannot take prompts or conversations (an ONNX "
                           "bundle holds a fixed caption prompt); serve the PyTorch model folder to chat, or use "
                           "POST /caption.", headers={"x-should-retry": "false"})
        parsed = parse_request(await request.body())
        urls = image_parts(parsed)
        if len(urls) > 1:  # the model reads one image per conversation (--max-images is at least 1)
            raise APIError(413, "too_many_images", f"{len(urls)} images in one conversation; the limit is 1 (the "
                           "model reads one image per conversation). Send one image.")
        messages = conversation(parsed)
        image = None
        if urls:
            image = await run_in_threadpool(decode_data_url, urls[0], max_pixels=limits.max_pixels)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()
        on_text = (lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)) if parsed.stream else None
        try:
            job = await run_in_threadpool(backend.prepare_chat, messages, image, on_text)
        except DistilViTError as err:
            raise _invalid(str(err)) from None
        task = asyncio.ensure_future(batcher.caption([(job, generation_options(parsed, default_max_tokens))]))
        await asyncio.sleep(0)  # let it queue: a full queue is a 503 before any answer starts
        if task.done() and task.exception() is not None:
            raise task.exception()
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        deadline = start + limits.timeout_s
        if not parsed.stream:
            try:
                [(reply, _)] = await asyncio.wait_for(task, timeout=max(0.0, deadline - time.perf_counter()))
            except asyncio.TimeoutError:
                raise _timeout(limits) from None
            return completion(reply, ident=ident, created=created, model=name)
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        events = _stream(task, pieces, deadline, limits, ident, created, name, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return batcher


def _timeout(limits: ServeLimits) -> APIError:
    return APIError(504, "timeout", f"the answer was not ready within {limits.timeout_s:g} s (the server is busy); "
                    "retry later.")


async def _stream(task, pieces: asyncio.Queue, deadline: float, limits: ServeLimits, ident: str, created: int,
                  name: str, include_usage: bool):
    """Server-sent events: the role, each new piece of text as it is generated, the finish reason, optionally
    the usage, then ``data: [DONE]``. A failure after the first event is sent as an ``{"error": ...}`` event."""
    yield chunk(ident, created, name, {"role": "assistant", "content": ""})
    try:
        while True:
            getter = asyncio.ensure_future(pieces.get())
            remaining = deadline - time.perf_counter()
            done, _ = await asyncio.wait({getter, task}, timeout=max(0.0, remaining),
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield chunk(ident, created, name, {"content": getter.result()})
                continue
            getter.cancel()
            if not done:
                raise _timeout(limits)
            break
        while not pieces.empty():
            yield chunk(ident, created, name, {"content": pieces.get_nowait()})
        [(reply, _)] = task.result()
        yield chunk(ident, created, name, {}, reply.finish_reason)
        if include_usage:
            yield chunk(ident, created, name, None, usage_=usage(reply))
    except APIError as err:
        yield f"data: {json.dumps(error_body('/v1/', err.status, err.code, err.message))}\n\n"
    except Exception as err:  # noqa: BLE001 -- the status line is gone: report the failure in the stream
        logger.exception("answering a streamed chat request failed")
        body = error_body("/v1/", 500, "internal_error", f"the server failed ({type(err).__name__}); this is a "
                          "bug, please report it with the server log.")
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        task.cancel()  # the client went away or the answer timed out: withdraw it if it has not run yet
    yield "data: [DONE]\n\n"
