"""The OpenAI-compatible API of `distilvit serve` (serving/openai_api.py), driven by the official `openai` client
against a real uvicorn server on 127.0.0.1: answers (plain and streamed) equal in-process chat generation, and
every kind of bad request gets its documented 4xx, surfaced by the client as APIStatusError with the message."""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import json
import threading
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serving_helpers import RecordingBackend, encode, free_port, make_model_dir, png_with_header_size

from distilvit.model.chat import chat, image_turn, join_parts
from distilvit.serving import ServeLimits, create_app, load_backend

openai = pytest.importorskip("openai")

LIMITS = ServeLimits(max_upload_bytes=200_000, max_pixels=100_000, max_images=3, timeout_s=20)
QUESTION = "the red circle"


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_encoder, tiny_lm):
    torch.manual_seed(0)  # the random projection, whatever ran before: the same replies every run
    return load_backend(make_model_dir(tmp_path_factory.mktemp("openai-model"), tiny_encoder, tiny_lm),
                        max_new_tokens=6)


@pytest.fixture(scope="module")
def server(backend):
    import uvicorn

    port = free_port()
    app = create_app(backend, LIMITS)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def expected_reply(backend, image_bytes: bytes | None, text: str = QUESTION, **generation):
    """The in-process answer (``distilvit.model.chat.chat``) to one user turn, the image first."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB") if image_bytes else None
    content = image_turn(text) if image is not None else join_parts([text])
    return chat(backend.model, backend.processor, [{"role": "user", "content": content}], image,
                max_new_tokens=6, **generation)


def expected(backend, image_bytes: bytes | None, text: str = QUESTION, **generation) -> str:
    return expected_reply(backend, image_bytes, text, **generation).text


# ---------------------------------------------------------------- answers
def test_the_client_gets_the_in_process_answer(client, backend):
    red, blue = encode((40, 30)), encode((30, 40), "JPEG", (0, 0, 255))
    answers = [client.chat.completions.create(model="any", messages=image_message(data_url(b, m)))
               for b, m in [(red, "image/png"), (blue, "image/jpeg")]]
    assert [a.choices[0].message.content for a in answers] == [expected(backend, red), expected(backend, blue)]
    first = answers[0]
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-") and first.model == backend.path.name
    reply = expected_reply(backend, red)
    assert first.choices[0].message.role == "assistant" and first.choices[0].finish_reason == reply.finish_reason
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (reply.prompt_tokens, reply.completion_tokens)
    assert first.usage.total_tokens == reply.prompt_tokens + reply.completion_tokens
    plain = client.chat.completions.create(model="any", messages=[{"role": "user", "content": QUESTION}])
    assert plain.choices[0].message.content == expected(backend, None)
    assert client.models.list().data[0].id == backend.path.name


def test_a_streamed_answer_comes_piece_by_piece_and_adds_up(client, backend):
    red = encode((40, 30))
    stream = client.chat.completions.create(model="any", messages=image_message(data_url(red)), stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks) and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    reply = expected_reply(backend, red)
    assert len(pieces) > 1 and "".join(pieces) == reply.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.completion_tokens


def test_the_event_stream_is_openai_sse_ending_with_done(server):
    body = {"model": "m", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"


def test_sampling_options_reach_the_model(client, backend):
    red = encode((40, 30))
    options = {"temperature": 1.5, "top_p": 0.9, "seed": 7}
    answer = client.chat.completions.create(model="m", messages=image_message(data_url(red)), **options)
    assert answer.choices[0].message.content == expected(backend, red, do_sample=True, temperature=1.5, top_p=0.9,
                                                         seed=7)


# ---------------------------------------------------------------- bad requests: documented 4xx, model never asked
@pytest.fixture
def remote_image_server():
    """A local HTTP server that records every request it gets (a remote URL must never be fetched)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(encode())

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/cat.png", hits
    httpd.shutdown()


def _refusal(client, messages, **extra):
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=messages, **extra)
    return err.value


def test_a_remote_url_is_refused_and_never_fetched(client, remote_image_server, tmp_path):
    url, hits = remote_image_server
    (tmp_path / "cat.png").write_bytes(encode())
    for remote in [url, url.replace("http:", "https:"), f"file://{tmp_path}/cat.png", "ftp://example.com/x.png",
                   "cat.png"]:
        error = _refusal(client, image_message(remote))
        assert isinstance(error, openai.BadRequestError) and error.status_code == 400
        assert error.code == "image_url_not_allowed" and "never fetches URLs" in error.message
    assert hits == []


BAD = {
    "undecodable image": (image_message(data_url(b"not an image at all")), 400, "undecodable_image", "cannot decode"),
    "truncated image": (image_message(data_url(encode((64, 64))[:60])), 400, "undecodable_image", "cannot decode"),
    "empty image": (image_message("data:image/png;base64,"), 400, "empty_image", "empty"),
    "not base64": (image_message("data:image/png;base64,@@@"), 400, "invalid_data_url", "not valid base64"),
    "percent-encoded": (image_message("data:image/png,abc"), 400, "invalid_data_url", "not base64-encoded"),
    "not an image type": (image_message(data_url(b"hello", "text/plain")), 415, "unsupported_media_type", "text/plain"),
    "too many pixels": (image_message(data_url(encode((400, 300)))), 413, "image_too_large", "400x300"),
    "bomb header": (image_message(data_url(png_with_header_size(50_000, 50_000))), 413, "image_too_large",
                    "100,000 pixels"),
    "body too large": (image_message(data_url(b"\x89PNG" + bytes(200_000))), 413, "request_too_large",
                       "200,000 bytes"),
    "two images": ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(encode())}}] * 2}],
                   413, "too_many_images", "one image per conversation"),
    "placeholder in text": ([{"role": "user", "content": "what is <image>"}], 400, "invalid_chat_request",
                            "<image>"),
    "image from the assistant": ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": data_url(encode())}}]}, {"role": "user", "content": "so?"}],
        400, "invalid_chat_request", "images go in user messages"),
    "ends with the assistant": ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}], 400,
                                "invalid_chat_request", "must end with a user turn"),
    "unknown role": ([{"role": "robot", "content": "hi"}], 400, "invalid_chat_request", "messages.0.role"),
    "no messages": ([], 400, "invalid_chat_request", "messages"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_gets_its_documented_4xx(client, backend, case, monkeypatch):
    messages, status, code, fragment = BAD[case]
    def never(*args, **kwargs):
        raise AssertionError("the model was asked")

    monkeypatch.setattr(backend.model, "generate", never)  # it must never be asked (that would be a 500)
    error = _refusal(client, messages)
    assert (error.status_code, error.code, error.type) == (status, code, "invalid_request_error")
    assert fragment in error.message and error.message.startswith(f"Error code: {status} - ")


@pytest.mark.parametrize("extra,fragment", [({"n": 2}, "n:"), ({"stop": ["x"]}, "'stop'"),
                                            ({"max_tokens": 0}, "max_tokens"), ({"temperature": 3}, "temperature")])
def test_unsupported_or_out_of_range_options_are_400(client, extra, fragment):
    error = _refusal(client, [{"role": "user", "content": "hi"}], **extra)
    assert error.status_code == 400 and error.code == "invalid_chat_request" and fragment in error.message


def test_a_body_that_is_not_json_is_400_in_openai_shape(server):
    response = httpx.post(f"{server}/v1/chat/completions", content=b"{nope", timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_chat_request" and "not JSON" in response.json()["error"]["message"]
    missing = httpx.get(f"{server}/v1/nothing-here", timeout=30).json()
    assert missing["error"]["code"] == "not_found" and "/v1/chat/completions" in missing["error"]["message"]
    flat = httpx.get(f"{server}/nothing-here", timeout=30).json()  # outside /v1 the shape stays /caption's
    assert flat["error"] == "not_found"


def test_a_model_that_cannot_chat_answers_501_without_retries():
    with TestClient(create_app(RecordingBackend(), LIMITS)) as test_client:
        response = test_client.post("/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "hi"}]})
        schema = test_client.get("/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]
    assert response.status_code == 501 and response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "chat_not_supported"
    assert "messages" in schema["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"400", "413", "415", "501"} <= set(schema["responses"])


# ---------------------------------------------------------------- micro-batching
def test_concurrent_conversations_share_batches_and_each_gets_its_own_answer(backend):
    app = create_app(backend, ServeLimits(max_batch_size=4, batch_wait_ms=300, timeout_s=60))
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0)]
    texts = ["the red circle", "a square", "is the dog left", "the cat"]
    bodies = [{"model": "m", "messages": image_message(data_url(encode((30, 20), colour=c)), t)}
              for c, t in zip(colours, texts)]

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
                answers = await asyncio.gather(*[http.post("/v1/chat/completions", json=b) for b in bodies])
                return answers, (await http.get("/health")).json()

    answers, health = asyncio.run(run())
    assert [a.status_code for a in answers] == [200] * 4
    contents = [a.json()["choices"][0]["message"]["content"] for a in answers]
    assert contents == [expected(backend, encode((30, 20), colour=c), t) for c, t in zip(colours, texts)]
    assert health["chat_batching"]["images"] == 4 and health["chat_batching"]["mean_batch_size"] > 1


class FakeChatBackend(RecordingBackend):
    """Answers every conversation with "ok" after ``delay_s``, or fails (a broken model)."""

    def prepare_chat(self, messages, image=None, on_text=None):
        return on_text

    def chat(self, jobs):
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        for on_text, _ in jobs:
            if on_text is not None:
                on_text("ok")
        from distilvit.model.chat import Reply

        return [Reply("ok", 3, 1, "stop") for _ in jobs]


def test_a_failure_after_streaming_started_is_an_error_event_then_done():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with TestClient(create_app(FakeChatBackend(fail=True), LIMITS), raise_server_exceptions=False) as test_client:
        events = [line for line in test_client.post("/v1/chat/completions", json=body).iter_lines() if line]
        body["stream"] = False
        plain = test_client.post("/v1/chat/completions", json=body)
    assert events[-1] == "data: [DONE]" and '"role": "assistant"' in events[0]
    error = json.loads(events[-2][len("data: "):])["error"]
    assert error["code"] == "internal_error" and "RuntimeError" in error["message"]
    assert plain.status_code == 500 and plain.json()["error"]["code"] == "internal_error"


def test_an_answer_over_the_timeout_is_504_or_a_timeout_event():
    limits = ServeLimits(timeout_s=0.2)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(create_app(FakeChatBackend(delay_s=1.0), limits)) as test_client:
        plain = test_client.post("/v1/chat/completions", json=body)
        events = [line for line in test_client.post("/v1/chat/completions", json=body | {"stream": True}).iter_lines()
                  if line]
        quick = TestClient(create_app(FakeChatBackend(), limits))
        with quick:
            answer = quick.post("/v1/chat/completions", json=body).json()
    assert plain.status_code == 504 and plain.json()["error"]["code"] == "timeout"
    assert json.loads(events[-2][len("data: "):])["error"]["code"] == "timeout" and events[-1] == "data: [DONE]"
    assert answer["choices"][0]["message"]["content"] == "ok"
