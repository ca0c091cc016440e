"""The HTTP API (`distilvit serve`): captions for good uploads, a JSON 4xx for every kind of bad one,
micro-batching of concurrent requests, timeouts, and both backends (PyTorch folder, ONNX bundle)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from serving_helpers import RecordingBackend, encode, free_port, make_model_dir, png_with_header_size

from distilvit.cli.main import main
from distilvit.errors import ModelError
from distilvit.serving import APIError, OnnxBackend, ServeLimits, TorchBackend, create_app, load_backend
from distilvit.serving.batching import MicroBatcher

SMALL = ServeLimits(max_upload_bytes=200_000, max_pixels=100_000, max_images=3, timeout_s=10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_encoder, tiny_lm):
    return make_model_dir(tmp_path_factory.mktemp("serve-model"), tiny_encoder, tiny_lm)


def upload(*parts, field: str = "images"):
    """``files=`` for one multipart request: ``parts`` are ``(filename, bytes, content_type)``."""
    return [(field, part) for part in parts]


def post(app_or_client, files=None, **kwargs):
    if isinstance(app_or_client, TestClient):
        return app_or_client.post("/caption", files=files, **kwargs)
    with TestClient(app_or_client) as client:
        return client.post("/caption", files=files, **kwargs)


# ---------------------------------------------------------------- captions
def test_one_image_gets_its_caption_from_the_torch_model(model_dir):
    backend = load_backend(model_dir, max_new_tokens=4)
    assert isinstance(backend, TorchBackend)
    image_bytes = encode((40, 30))
    response = post(create_app(backend, SMALL), upload(("red.png", image_bytes, "image/png")))
    assert response.status_code == 200
    body = response.json()
    import io

    from PIL import Image

    expected = backend.caption([Image.open(io.BytesIO(image_bytes)).convert("RGB")])
    assert [c["caption"] for c in body["captions"]] == expected
    assert body["captions"][0] | {"caption": None} == {"filename": "red.png", "width": 40, "height": 30, "caption": None}
    assert set(body["timing"]) == {"decode_ms", "caption_ms", "total_ms"} and body["timing"]["total_ms"] > 0


def test_an_onnx_bundle_is_served_with_the_same_captions(model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from distilvit.export import export_bundle

    export_bundle(model_dir, tmp_path / "onnx", quantize="none", progress=False)
    onnx_backend = load_backend(tmp_path / "onnx", max_new_tokens=4)
    assert isinstance(onnx_backend, OnnxBackend) and onnx_backend.describe()["backend"] == "onnx"
    files = upload(("a.png", encode((40, 30)), "image/png"), ("b.jpg", encode((20, 50), "JPEG", (0, 0, 255)), "image/jpeg"))
    onnx_captions = [c["caption"] for c in post(create_app(onnx_backend, SMALL), files).json()["captions"]]
    torch_captions = [c["caption"] for c in post(create_app(load_backend(model_dir, max_new_tokens=4), SMALL),
                                                  files).json()["captions"]]
    assert onnx_captions == torch_captions and len(onnx_captions) == 2


def test_many_images_come_back_in_upload_order():
    sizes = [(10, 20), (30, 5), (7, 7)]
    files = upload(*[(f"{i}.png", encode(size), "image/png") for i, size in enumerate(sizes)])
    body = post(create_app(RecordingBackend(), SMALL), files).json()
    assert [c["caption"] for c in body["captions"]] == ["10x20", "30x5", "7x7"]
    assert [c["filename"] for c in body["captions"]] == ["0.png", "1.png", "2.png"]


def test_generic_content_type_is_accepted_when_the_bytes_are_an_image():
    response = post(create_app(RecordingBackend(), SMALL), upload(("photo", encode((9, 8), "WEBP"), "application/octet-stream")))
    assert response.status_code == 200 and response.json()["captions"][0]["caption"] == "9x8"


# ---------------------------------------------------------------- bad input: a JSON 4xx, the model never runs
PPM = b"P6\n2 2\n255\n" + bytes(12)  # decodable by PIL, but not an allowed upload format
BAD_UPLOADS = {
    "text file": (upload(("notes.txt", b"hello", "text/plain")), 415, "unsupported_media_type", "not an image"),
    "garbage": (upload(("x.png", b"not an image at all", "image/png")), 400, "undecodable_image", "cannot decode"),
    "truncated": (upload(("t.png", encode((64, 64))[:60], "image/png")), 400, "undecodable_image", "cannot decode"),
    "empty": (upload(("e.png", b"", "image/png")), 400, "empty_image", "empty"),
    "svg": (upload(("v.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")), 400,
            "undecodable_image", "PNG, JPEG"),
    "ppm": (upload(("p.ppm", PPM, "image/x-portable-pixmap")), 400, "undecodable_image", "cannot decode"),
    "too many pixels": (upload(("big.png", encode((400, 300)), "image/png")), 413, "image_too_large", "400x300"),
    "bomb header": (upload(("bomb.png", png_with_header_size(50_000, 50_000), "image/png")), 413,
                    "image_too_large", "limit is 100,000 pixels"),
    "too many images": (upload(*[("a.png", encode(), "image/png")] * 4), 413, "too_many_images", "limit is 3"),
    "body too large": (upload(("huge.png", b"\x89PNG" + bytes(300_000), "image/png")), 413, "request_too_large",
                       "200,000 bytes"),
    "wrong field": (upload(("a.png", encode(), "image/png"), field="file"), 422, "invalid_request", "'images'"),
    "text field": ({"images": (None, "http://example.com/cat.jpg")}, 422, "invalid_request", "URLs are not fetched"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_a_json_4xx_and_never_reaches_the_model(case):
    files, status, code, fragment = BAD_UPLOADS[case]
    backend = RecordingBackend()
    response = post(create_app(backend, SMALL), files)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code and fragment in body["message"]
    assert backend.batches == []


def test_decompression_bomb_over_pils_own_limit_is_413_not_500():
    """PIL raises DecompressionBombError itself above 2x its MAX_IMAGE_PIXELS; that must stay a 413."""
    limits = ServeLimits(max_pixels=10**12)
    response = post(create_app(RecordingBackend(), limits), upload(("bomb.png", png_with_header_size(60_000, 60_000), "image/png")))
    assert response.status_code == 413 and response.json()["error"] == "image_too_large"


@pytest.mark.parametrize("kwargs,status", [
    ({"json": {"url": "http://example.com/cat.jpg"}}, 415),
    ({"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, 400),  # no boundary
    ({"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=b"}}, 422),
])
def test_malformed_request_bodies_are_4xx_json(kwargs, status):
    response = post(create_app(RecordingBackend(), SMALL), **kwargs)
    assert response.status_code == status and {"error", "message"} <= set(response.json())


def test_chunked_body_over_the_limit_is_413_json():
    body = (b'--bnd\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\nContent-Type: image/png'
            b"\r\n\r\n" + bytes(300_000) + b"\r\n--bnd--\r\n")
    chunks = (body[i : i + 16_384] for i in range(0, len(body), 16_384))  # no Content-Length: chunked
    response = post(create_app(RecordingBackend(), SMALL), content=chunks,
                    headers={"content-type": "multipart/form-data; boundary=bnd"})
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"


# ---------------------------------------------------------------- timeouts, failures, other endpoints
def test_request_over_the_timeout_gets_504_json():
    app = create_app(RecordingBackend(delay_s=1.0), ServeLimits(timeout_s=0.2))
    response = post(app, upload(("a.png", encode(), "image/png")))
    assert response.status_code == 504
    assert response.json()["error"] == "timeout" and "0.2 s" in response.json()["message"]


def test_a_failing_model_is_a_500_json_and_the_server_keeps_serving():
    backend = RecordingBackend(fail=True)
    with TestClient(create_app(backend, SMALL), raise_server_exceptions=False) as client:
        first = post(client, upload(("a.png", encode(), "image/png")))
        assert first.status_code == 500 and first.json()["error"] == "internal_error"
        backend.fail = False
        assert post(client, upload(("a.png", encode(), "image/png"))).status_code == 200


def test_health_docs_and_unknown_paths():
    with TestClient(create_app(RecordingBackend(), SMALL)) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model"] == {"backend": "recording"}
        assert health["limits"]["max_images"] == 3
        assert client.get("/docs").status_code == 200
        schema = client.get("/openapi.json").json()["paths"]["/caption"]["post"]
        assert "multipart/form-data" in schema["requestBody"]["content"]
        assert {"400", "413", "415", "504"} <= set(schema["responses"])
        assert client.get("/nope").json()["error"] == "not_found"
        assert client.get("/caption").status_code == 405


# ---------------------------------------------------------------- micro-batching
def test_concurrent_requests_are_captioned_in_shared_batches():
    backend = RecordingBackend(delay_s=0.05)
    limits = ServeLimits(max_batch_size=4, batch_wait_ms=50)
    app = create_app(backend, limits)
    sizes = [(10 + i, 20) for i in range(12)]

    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(*[
                    client.post("/caption", files=upload((f"{w}.png", encode((w, h)), "image/png"))) for w, h in sizes
                ])

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    # every request gets its own image's caption back, whichever batch it ran in
    assert [r.json()["captions"][0]["caption"] for r in responses] == [f"{w}x{h}" for w, h in sizes]
    assert sum(backend.batches) == 12 and max(backend.batches) <= 4
    assert len(backend.batches) <= 6, f"requests were not batched: {backend.batches}"


def test_a_full_queue_answers_503_and_a_timed_out_request_is_dropped_before_the_model():
    release = threading.Event()
    seen: list[int] = []

    def blocking_caption(images):
        seen.append(len(images))
        release.wait(5)
        return ["c"] * len(images)

    async def run():
        batcher = MicroBatcher(blocking_caption, max_batch_size=8, batch_wait_ms=0, max_queue=2)
        await batcher.start()
        running = asyncio.create_task(batcher.caption(["a", "b"]))
        await asyncio.sleep(0.1)  # the worker has taken a and b; the queue is empty again
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.caption(["c", "d"]), 0.1)  # queued, then given up
        queued = asyncio.create_task(batcher.caption(["e", "f"]))
        await asyncio.sleep(0)
        with pytest.raises(APIError) as err:
            await batcher.caption(["g"])
        release.set()
        results = await asyncio.gather(running, queued)
        await batcher.stop()
        return err.value, results

    err, results = asyncio.run(run())
    assert err.status == 503 and err.code == "overloaded"
    assert results == [[("c", 2), ("c", 2)], [("c", 2), ("c", 2)]]
    assert seen == [2, 2]  # c and d timed out while queued: never captioned


# ---------------------------------------------------------------- loading and the CLI
def test_default_pixel_limit_is_the_one_the_caption_command_uses():
    from distilvit.data import DEFAULT_MAX_PIXELS

    assert ServeLimits().max_pixels == DEFAULT_MAX_PIXELS


def test_load_backend_rejects_what_is_not_a_model(tmp_path, model_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"format": "something-else"}')
    for path, message in [(tmp_path / "missing", "does not exist"), (tmp_path / "file.txt", "is a file"),
                          (tmp_path / "empty", "neither"), (tmp_path / "other", "not a distilvit ONNX bundle")]:
        with pytest.raises(ModelError, match=message):
            load_backend(path)


@pytest.mark.parametrize("argv,message", [
    (["serve", "/no/such/model"], "does not exist"),
    (["gradio", "/no/such/model"], "does not exist"),
    (["serve", "MODEL", "--batch-wait-ms", "-1"], "--batch-wait-ms"),
    (["serve", "MODEL", "--max-images", "20", "--max-queue", "10"], "--max-queue"),
    (["serve", "MODEL", "--port", "BUSY"], "cannot listen"),
])
def test_serve_cli_bad_input_is_error_exit_2(argv, message, model_dir, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        names = {"MODEL": str(model_dir), "BUSY": str(busy.getsockname()[1])}
        assert main([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err
