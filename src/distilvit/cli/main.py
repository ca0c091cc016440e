"""The ``distilvit`` command: one entry point, one sub-command per job."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings

from distilvit import __version__
from distilvit.errors import DistilViTError

COMMANDS = ("train", "eval", "caption", "chat", "cache", "serve", "gradio", "export", "convert", "shapes-encoder", "data")


def build_parser() -> argparse.ArgumentParser:
    from distilvit.cli import cache, caption, chat, convert, data, evaluate, export, serve, shapes_encoder, train
    from distilvit.cli import gradio as gradio_cli

    parser = argparse.ArgumentParser(
        prog="distilvit",
        description="Train, evaluate and run small image captioners "
        "(frozen vision encoder -> projection -> decoder-only LM + LoRA).",
    )
    parser.add_argument("--version", action="version", version=f"distilvit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (train, evaluate, caption, chat, cache, serve, gradio_cli, export, convert, shapes_encoder, data):
        module.add_parser(subparsers)
    return parser


def _quiet_libraries(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_libraries(args.verbose)
    try:
        return args.run(args) or 0
    except DistilViTError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an internal bug: say so plainly, keep the traceback one variable away
        if os.environ.get("DISTILVIT_TRACEBACK"):
            traceback.print_exc()
        print(
            f"internal error: {type(err).__name__}: {err}\n"
            "This is a bug in distilvit; re-run with DISTILVIT_TRACEBACK=1 for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
