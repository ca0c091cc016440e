"""``distilvit chat MODEL --image IMG``: talk about an image in the terminal (multi-turn, streamed), or one shot."""

from __future__ import annotations

import argparse
import sys

from distilvit.cli.options import add_generation_options, generation_kwargs
from distilvit.errors import DistilViTError

EXIT = "/exit"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat about an image with a trained model (streamed, multi-turn)",
        description="Ask a model about an image. With --prompt: one answer, then exit. Otherwise each line read "
        f"from standard input is a user turn and the answer is printed as it is generated; the conversation "
        f"(history included) goes on until end of input (Ctrl-D) or a line '{EXIT}'. The image is attached to "
        "the first user turn.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a model folder written by `distilvit train` (PyTorch; ONNX bundles hold a "
                        "fixed caption prompt and cannot chat)")
    parser.add_argument("--image", metavar="IMG", default=None,
                        help="the image to talk about (PNG, JPEG, WebP, ...); without it the conversation is text-only")
    parser.add_argument("--prompt", default=None,
                        help="ask this one question, print the answer and exit (no reading from standard input)")
    parser.add_argument("--system", default=None, help="a system message put before the conversation")
    add_generation_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    generation = generation_kwargs(args)  # fail on bad options or a bad image before loading the model
    if args.prompt is not None and not args.prompt.strip():
        raise DistilViTError("--prompt is empty; give the question to ask (or leave --prompt out to chat).")
    image = None
    if args.image is not None:
        from distilvit.data import open_image

        image = open_image(args.image)

    from distilvit.model import load_captioner
    from distilvit.model.chat import chat, check_chat_model, image_turn, join_parts

    join_parts([args.prompt or "", args.system or ""])  # text holding <image> fails before the model loads
    model, processor = load_captioner(args.model)
    check_chat_model(model)
    messages = [{"role": "system", "content": join_parts([args.system])}] if args.system else []
    interactive = args.prompt is None and sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.model}; type {EXIT} or press Ctrl-D to quit.", file=sys.stderr)
    for text in [args.prompt] if args.prompt is not None else _lines(interactive):
        first = not any(m["role"] == "user" for m in messages)
        try:
            content = image_turn(text) if first and image is not None else join_parts([text])
        except DistilViTError as err:
            if args.prompt is not None:
                raise
            print(f"error: {err}", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": content})
        reply = chat(model, processor, messages, image, on_text=lambda piece: print(piece, end="", flush=True), **generation)
        print(flush=True)
        messages.append({"role": "assistant", "content": reply.text})
    return 0


def _lines(interactive: bool):
    """Non-empty user lines from standard input until end of input or :data:`EXIT`."""
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        text = line.strip()
        if text == EXIT:
            return
        if text:
            yield text
