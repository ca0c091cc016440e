"""``distilvit caption MODEL IMAGE...``: print one caption per image."""

from __future__ import annotations

import argparse
import json

from distilvit.cli.options import add_generation_options, generation_kwargs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption images with a trained model",
        description="Print one caption per image (greedy decoding unless told otherwise).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a model folder written by `distilvit train` (or one of its checkpoints)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    parser.add_argument("--json", action="store_true", help='print a JSON list of {"image", "caption"} objects')
    parser.add_argument("--batch-size", type=int, default=8, help="images captioned together")
    add_generation_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from distilvit.data import open_image
    from distilvit.model import load_captioner
    from distilvit.model.captioning import generate_captions

    generation = generation_kwargs(args)  # fail on bad options or images before loading the model
    images = [open_image(path) for path in args.images]
    model, processor = load_captioner(args.model)
    captions = generate_captions(model, processor, images, batch_size=args.batch_size, **generation)
    if args.json:
        print(json.dumps([{"image": p, "caption": c} for p, c in zip(args.images, captions)], indent=2))
    else:
        for path, caption in zip(args.images, captions):
            print(f"{path}\t{caption}" if len(args.images) > 1 else caption)
    return 0
