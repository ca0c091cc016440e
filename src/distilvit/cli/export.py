"""``distilvit export MODEL --out DIR``: write an ONNX bundle (``docs/export.md``)."""

from __future__ import annotations

import argparse

LAYOUTS = ("distilvit", "transformers.js", "image-to-text")


def add_parser(subparsers) -> None:
    from distilvit.export.manifest import DEFAULT_QUANTIZE, QUANTIZE_OPTIONS

    parser = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX (runs with onnxruntime, no torch)",
        description="Write an ONNX bundle: vision encoder + projection, token embeddings, the LM (LoRA merged) "
        "with a KV cache, tokenizer files and manifest.json. Caption with it via `distilvit caption --onnx DIR`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from distilvit.cli.options import add_revision_option

    parser.add_argument("model", help="a model folder written by `distilvit train` (or one of its checkpoints), or "
                        "the Hub id (owner/name) of a pushed one")
    add_revision_option(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="bundle folder to write (new, empty, or an older bundle, which is replaced)")
    parser.add_argument("--quantize", choices=QUANTIZE_OPTIONS, default=DEFAULT_QUANTIZE,
                        help="weight storage: none (fp32), fp16 (half-size weights, fp32 compute), int8 or int4 "
                        "(per-part recipes measured to keep captions; see docs/export.md)")
    parser.add_argument("--layout", choices=LAYOUTS, default="distilvit",
                        help="folder layout: distilvit (manifest.json bundle for `distilvit caption --onnx`, "
                        "OnnxCaptioner and the web demo) or transformers.js (config.json with model_type llava and "
                        "onnx/vision_encoder, embed_tokens, decoder_model_merged at the dtype suffix of --quantize: "
                        "AutoProcessor + AutoModelForImageTextToText load it) or image-to-text (model_type vision-encoder-decoder: onnx/encoder_model and "
                        "decoder_model_merged, for transformers.js's image-to-text pipeline as Firefox runs it); "
                        "docs/interop.md")
    parser.add_argument("--exact-matmuls", action="store_true",
                        help="int4: keep float32 activations in every matmul (no int8 vision matmuls, MatMulNBits "
                        "accuracy_level 0): outputs closest to fp32, about 1.7-1.9x slower on CPU; no effect on "
                        "none/fp16/int8")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.layout != "distilvit":
        if args.layout == "transformers.js":
            from distilvit.export.transformers_js import export_transformers_js as export
        else:
            from distilvit.export.image_to_text import export_image_to_text as export
        summary = export(args.model, args.out, quantize=args.quantize, exact_matmuls=args.exact_matmuls,
                         revision=args.revision)
        for session, size in summary["sizes_mb"].items():
            print(f"{session:<21} {summary['dtype']:<5} {size:>8.1f} MB")
        print(f"{'total':<27} {summary['total_mb']:>8.1f} MB  -> {args.out}")
        return 0
    from distilvit.export import export_bundle
    from distilvit.export.manifest import shared_files

    manifest = export_bundle(args.model, args.out, quantize=args.quantize, exact_matmuls=args.exact_matmuls,
                             revision=args.revision)
    sizes, kinds = manifest["sizes_mb"], manifest["quantization"]
    for part, kind in kinds.items():
        print(f"{part:<13} {kind:<5} {sizes[part]:>8.1f} MB")
    shared = shared_files(manifest)
    if shared:  # weights read by several graphs, stored once
        print(f"{'shared':<19} {sizes['shared']:>8.1f} MB  ({', '.join(shared)})")
    print(f"{'total':<19} {sizes['total']:>8.1f} MB  -> {args.out}")
    return 0
