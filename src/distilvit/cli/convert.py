"""``distilvit convert MODEL --to llava --out DIR``: a trained model in another library's standard format."""

from __future__ import annotations

import argparse

TARGETS = ("llava",)  # formats distilvit.export.llava writes


def add_parser(subparsers) -> None:
    from distilvit.cli.options import add_revision_option

    parser = subparsers.add_parser(
        "convert",
        help="convert a trained model to a standard transformers checkpoint (LLaVA)",
        description="Write a trained prefix captioner as a standard `LlavaForConditionalGeneration` folder "
        "(LoRA merged, safetensors, LlavaProcessor with chat template): plain transformers "
        "(AutoModelForImageTextToText + AutoProcessor) and LLaVA-reading tools load it without distilvit. Needs a "
        "SigLIP, CLIP or ViT encoder, --prefix-reduction none and --no-projection-layernorm; other models get an "
        "error saying why (docs/interop.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a model folder written by `distilvit train` (or one of its checkpoints), or "
                        "the Hub id (owner/name) of a pushed one")
    add_revision_option(parser)
    parser.add_argument("--to", choices=TARGETS, required=True, help="target format: llava = transformers' "
                        "LlavaForConditionalGeneration")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder to write (new, empty, or an earlier conversion, which is replaced)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from distilvit.export.llava import convert_to_llava

    out = convert_to_llava(args.model, args.out, revision=args.revision)
    print(f"LLaVA model written to {out}")
    return 0
