"""``distilvit serve MODEL|ONNX_DIR``: the captioning HTTP API (FastAPI + uvicorn, micro-batched)."""

from __future__ import annotations

import argparse
import socket

from distilvit.cli.options import positive_int
from distilvit.errors import DistilViTError
from distilvit.serving.limits import MB, ServeLimits


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """The model, address and decoding options ``serve`` and ``gradio`` share."""
    parser.add_argument("model", metavar="MODEL|ONNX_DIR",
                        help="a model folder written by `distilvit train`, or an ONNX bundle folder (`distilvit export`)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 makes the server reachable from other machines)")
    parser.add_argument("--port", type=positive_int, default=default_port, help="TCP port to listen on")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="longest caption in tokens (None: the model's own setting)")
    parser.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (1 = greedy)")
    parser.add_argument("--max-pixels", type=positive_int, default=ServeLimits.max_pixels,
                        help="largest image (width x height) accepted, checked before decoding")
    parser.add_argument("--max-upload-mb", type=positive_float, default=ServeLimits.max_upload_bytes / MB,
                        help="largest request body (all images of a request together), in MiB")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (POST /caption)",
        description="Serve a model (PyTorch folder or ONNX bundle) as an HTTP API: POST /caption with multipart "
        "image uploads in the field 'images', GET /health, OpenAPI docs at /docs. Concurrent requests are "
        "captioned together in micro-batches. Uploads only: the server never fetches URLs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_options(parser, default_port=8000)
    defaults = ServeLimits()
    parser.add_argument("--max-images", type=positive_int, default=defaults.max_images,
                        help="images per request (more: 413)")
    parser.add_argument("--timeout", type=positive_float, default=defaults.timeout_s,
                        help="seconds a request may wait for its captions (then 504)")
    parser.add_argument("--max-batch-size", type=positive_int, default=defaults.max_batch_size,
                        help="images captioned together in one model call")
    parser.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_ms,
                        help="how long the first queued image waits for others to join its batch")
    parser.add_argument("--max-queue", type=positive_int, default=defaults.max_queue,
                        help="images waiting to be captioned before new requests get 503")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn log level")
    parser.set_defaults(run=run)


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`DistilViTError` when ``host:port`` cannot be bound (in use, or not an address here)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise DistilViTError(f"cannot listen on {host}:{port}: {err.strerror or err}. Pick another --port "
                             "(or --host).") from None


def require(*modules: str) -> None:
    """Raise :class:`DistilViTError` naming the ``serve`` extra when one of ``modules`` is not installed."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise DistilViTError(f"{', '.join(missing)} not installed; install the serving extras: "
                             "pip install 'distilvit[serve]'.")


def limits_from_args(args) -> ServeLimits:
    return ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * MB), max_pixels=args.max_pixels, max_images=args.max_images,
        timeout_s=args.timeout, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
        max_queue=args.max_queue,
    )


def run(args) -> int:
    require("fastapi", "uvicorn", "multipart")
    import uvicorn

    from distilvit.serving import create_app, load_backend

    limits = limits_from_args(args)  # bad options fail before the model loads
    check_port_free(args.host, args.port)
    backend = load_backend(args.model, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    app = create_app(backend, limits)
    print(f"serving {args.model} on http://{args.host}:{args.port}  (POST /caption, docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
