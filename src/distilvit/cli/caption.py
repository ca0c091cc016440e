"""``distilvit caption MODEL IMAGE...``: print one caption per image."""

from __future__ import annotations

import argparse
import json

from distilvit.cli.options import add_generation_options, add_revision_option, generation_kwargs, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption images with a trained model",
        description="Print one caption per image (greedy decoding unless told otherwise).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a model folder written by `distilvit train` (or one of its checkpoints), or "
                        "the Hub id (owner/name) of a pushed one; with --onnx, a bundle folder written by "
                        "`distilvit export` (or its Hub id)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    parser.add_argument("--onnx", action="store_true",
                        help="MODEL is an ONNX bundle: caption with onnxruntime, no torch (greedy or beam search; "
                        "sampling, repetition controls and --ban are not available)")
    parser.add_argument("--prompt", default=None,
                        help="an instruction or question answered for each image instead of the model's own caption "
                        "prompt (PyTorch models of the prefix architecture; same layout as `distilvit chat --prompt`)")
    parser.add_argument("--json", action="store_true", help='print a JSON list of {"image", "caption"} objects')
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images captioned together")
    add_revision_option(parser)
    add_generation_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from distilvit.data import open_image

    generation = generation_kwargs(args)  # fail on bad options or images before loading the model
    if args.onnx:
        check_onnx_options(generation)
        if args.prompt is not None:
            from distilvit.errors import DistilViTError

            raise DistilViTError("--prompt cannot be used with --onnx (a bundle holds the model's fixed caption "
                                 "prompt); use the PyTorch model folder.")
    images = [open_image(path) for path in args.images]
    if args.onnx:
        from distilvit.export import OnnxCaptioner
        from distilvit.hub.resolve import resolve_model

        options = {k: v for k, v in generation.items() if k in ONNX_OPTIONS}
        captions = OnnxCaptioner(resolve_model(args.model, args.revision, onnx=True)).caption(images, batch_size=args.batch_size, **options)
    else:
        from distilvit.model import load_captioner
        from distilvit.model.captioning import generate_captions

        model, processor = load_captioner(args.model, revision=args.revision)
        if args.prompt is not None:
            from distilvit.model.chat import answer_images

            captions = answer_images(model, processor, images, args.prompt, batch_size=args.batch_size, **generation)
        else:
            captions = generate_captions(model, processor, images, batch_size=args.batch_size, **generation)
    if args.json:
        print(json.dumps([{"image": p, "caption": c} for p, c in zip(args.images, captions)], indent=2))
    else:
        for path, caption in zip(args.images, captions):
            print(f"{path}\t{caption}" if len(args.images) > 1 else caption)
    return 0


ONNX_OPTIONS = ("max_new_tokens", "num_beams", "length_penalty")


def check_onnx_options(generation: dict) -> None:
    """Bundles decode greedily or with beam search: reject the other decoding options clearly."""
    from distilvit.errors import DistilViTError

    unsupported = sorted(k for k, v in generation.items() if k not in ONNX_OPTIONS and v is not False)
    if unsupported:
        names = ", ".join("--" + ("ban" if k == "banned_words" else k.replace("_", "-")) for k in unsupported)
        raise DistilViTError(f"{names} cannot be used with --onnx (bundles decode greedily or with beam search); "
                             "caption with the PyTorch model folder instead.")
