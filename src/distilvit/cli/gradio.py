"""``distilvit gradio MODEL|ONNX_DIR``: a local web page to caption one image at a time."""

from __future__ import annotations

import argparse

from distilvit.cli.serve import add_model_options, check_port_free, require
from distilvit.serving.limits import MB


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "gradio",
        help="a local Gradio page: upload an image, read its caption",
        description="Serve a Gradio page for a model (PyTorch folder or ONNX bundle). Offline: no share link, "
        "no telemetry. Also callable with gradio_client (endpoint /caption). For many clients, use "
        "`distilvit serve`, which batches requests.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_options(parser, default_port=7860)
    parser.set_defaults(run=run)


def run(args) -> int:
    from distilvit.serving import load_backend

    require("gradio")
    check_port_free(args.host, args.port)
    backend = load_backend(args.model, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                           revision=args.revision)
    from distilvit.serving.gradio_app import launch  # imports gradio (seconds): after the cheap checks

    print(f"Gradio page for {args.model} on http://{args.host}:{args.port}", flush=True)
    launch(backend, host=args.host, port=args.port, max_pixels=args.max_pixels,
           max_upload_bytes=int(args.max_upload_mb * MB), quiet=True)
    return 0
