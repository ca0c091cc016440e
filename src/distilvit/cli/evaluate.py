"""``distilvit eval MODEL --dataset ...``: caption metrics and a report."""

from __future__ import annotations

import argparse
import json

from distilvit.cli.checks import check_local_model, check_output_folder
from distilvit.cli.options import add_generation_options, add_revision_option, generation_kwargs, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a trained model on a dataset split",
        description="Caption a dataset split and compute BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap) and "
        "exact match; write metrics.json, a report (HTML/Markdown) with sample images, and predictions.jsonl. "
        "Conversation sets (shapes-vqa, .json/.jsonl conversation files) are scored as question answering: "
        "exact match per question kind, and for shapes-vqa on scenes with seen vs held-out colour-shape pairs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="a model folder written by `distilvit train`, or the Hub id (owner/name) of a pushed one")
    add_revision_option(p)
    p.add_argument("--dataset", nargs="+", default=["shapes"], metavar="NAME_OR_PATH",
                   help="datasets, as for train; shapes-vqa or conversation files (.json/.jsonl) score question answering")
    p.add_argument("--image-folder", default=None, help="folder the image paths of conversation files are relative to")
    p.add_argument("--blind", action="store_true", help="zero the image features (the blind baseline)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="split to score; all = every row of the given datasets, whatever their split (e.g. a test "
                   "file of your own)")
    p.add_argument("--sample", type=positive_int, default=None, help="score a reproducible subset of N images")
    p.add_argument("--out", default=None, help="output folder (default: eval-<model folder name> in the current "
                   "directory); a folder holding another evaluation's report is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report of another evaluation in --out (a re-run of the same one is always replaced)")
    p.add_argument("--format", default="html", choices=["html", "md", "both"], help="report format")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images captioned together")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (saves the ~5 s Java start)")
    add_generation_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from distilvit.evaluation.outdir import default_out_dir
    from distilvit.evaluation.run import evaluate_model
    generation = generation_kwargs(args)
    out = args.out or str(default_out_dir(args.model))
    check_output_folder("--out", out)  # before the split is captioned
    check_local_model(args.model)
    metrics = evaluate_model(
        args.model, args.dataset, split=args.split, sample=args.sample, out_dir=out, fmt=args.format,
        batch_size=args.batch_size, use_meteor=not args.no_meteor, generation=generation, overwrite=args.overwrite,
        revision=args.revision, image_folder=args.image_folder, blind=args.blind,
    )
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=2))
    print(f"report written to {out}/")
    return 0
