"""``distilvit data``: dataset tools (merge, debias, report, synth-prompts). See README.md's `distilvit data`."""

from __future__ import annotations

import argparse

from distilvit.cli.options import positive_int

_DATASET_HELP = ("datasets, as for train: registry names, shapes, all, or local paths (an image folder with "
                 "metadata.jsonl/csv, a COCO captions or Karpathy JSON file, a folder written by `distilvit data`)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="dataset tools: merge sources, de-bias captions, quality report, prompts for rare objects",
        description="Dataset tools. Every command reads any dataset distilvit reads; merge and debias write a folder "
        "that `distilvit train --dataset FOLDER` reads.")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _add_merge(actions)
    _add_debias(actions)
    _add_report(actions)
    _add_prompts(actions)


def _out_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: save_to_disk Arrow files, data/*.parquet shards and a dataset card (README.md)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it already exists and is not empty")


def _add_merge(actions) -> None:
    p = actions.add_parser(
        "merge", help="merge caption sources into one deduplicated dataset with train/validation/test splits",
        description="Normalise every source to {image, alt_text, source, source_id}, drop duplicate images (same "
        "bytes; their captions are merged into the kept row), split by image content with a fixed seed (an image is "
        "never in two splits), and write save_to_disk files, Parquet shards and a dataset card with the counts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", nargs="+", required=True, metavar="NAME_OR_PATH", help=_DATASET_HELP)
    _out_options(p)
    p.add_argument("--seed", type=int, default=42, help="seed of the content-hash split")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of images in the validation split")
    p.add_argument("--test-fraction", type=float, default=0.05, help="share of images in the test split")
    p.add_argument("--sample", type=positive_int, default=None,
                   help="read a reproducible subset of N rows of each source (default: every row)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="also upload the card and Parquet shards to this Hub dataset repository (owner/name, or name "
                   "under the token's user); the token and the Hub are checked before any work")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository as private")
    p.set_defaults(run=run_merge)


def run_merge(args) -> int:
    from distilvit.datatools.merge_job import merge_job

    summary = merge_job(args.dataset, args.out, seed=args.seed, validation=args.val_fraction, test=args.test_fraction,
                        sample=args.sample, overwrite=args.overwrite, push_to_hub=args.push_to_hub,
                        private=args.private)
    print(summary)
    return 0


def _rules_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", default=None, metavar="FILE",
                   help="de-bias word lists, a JSON file laid out like the default "
                   "(src/distilvit/datatools/debias_rules.json; default: that file)")


def _add_debias(actions) -> None:
    p = actions.add_parser(
        "debias", help="rewrite captions with documented rules: neutral people words, no ethnicity/religion/"
        "nationality, 'several' for counts above two, no reading of text in the image",
        description="Rule-based caption rewrite (word lists in a JSON file you can replace with --rules). The original "
        "captions are kept in original_alt_text; a rewrite that would leave no word keeps the caption and flags the "
        "row (debias_flagged); running it again changes nothing. Prints and saves what changed, by rule.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", nargs="+", required=True, metavar="NAME_OR_PATH", help=_DATASET_HELP)
    _out_options(p)
    _rules_option(p)
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the content-hash split of sources that are not a distilvit data folder")
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="also rewrite each caption through this OpenAI-compatible endpoint (base URL, e.g. "
                   "http://127.0.0.1:8000/v1) before the rules; off by default")
    p.add_argument("--llm-model", default="gpt-4o-mini", help="with --llm-url: the model name sent to the endpoint")
    p.add_argument("--llm-api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="with --llm-url: the environment variable holding the endpoint's API key (may be unset)")
    p.set_defaults(run=run_debias)


def run_debias(args) -> int:
    from distilvit.datatools.debias import debias_job

    print(debias_job(args.dataset, args.out, rules_file=args.rules, llm_url=args.llm_url, llm_model=args.llm_model,
                     llm_api_key_env=args.llm_api_key_env, overwrite=args.overwrite, seed=args.seed))
    return 0


def _add_report(actions) -> None:
    p = actions.add_parser(
        "report", help="dataset quality report: caption statistics, duplicates, protected terms, object balance, "
        "image-text alignment, worst examples (CSV, JSON, HTML)",
        description="Measure a dataset: caption length and vocabulary, duplicate rate, protected-attribute terms by "
        "category before and after de-biasing, the object distribution (an objects column, else the nouns of the "
        "captions) with entropy, Gini, top-k share and rare classes, per-example image-text alignment (--model, "
        "--clip-model) and the worst examples. Writes report.json, examples.csv, objects.csv, protected_terms.csv "
        "and report.html with plots and thumbnails.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", nargs="+", required=True, metavar="NAME_OR_PATH", help=_DATASET_HELP)
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it already exists and is not empty")
    _rules_option(p)
    p.add_argument("--model", default=None,
                   help="a distilvit captioner (folder or Hub id): score each image by its captions' mean token "
                   "log-likelihood (default: no score)")
    p.add_argument("--clip-model", default=None,
                   help="a CLIP model (folder or Hub id): score each image by the mean image-caption cosine similarity "
                   "(default: no score)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images scored together by --model/--clip-model")
    p.add_argument("--top-k", type=positive_int, default=10, help="report the share of the K most frequent object classes")
    p.add_argument("--rare-threshold", type=float, default=0.01,
                   help="an object class is rare when its share of all object occurrences is below this")
    p.add_argument("--worst", type=positive_int, default=20, help="how many worst examples to list (with thumbnails)")
    p.add_argument("--sample", type=positive_int, default=None,
                   help="read a reproducible subset of N rows of each source (default: every row)")
    p.add_argument("--seed", type=int, default=42, help="seed of --sample and of the content-hash split")
    p.set_defaults(run=run_report)


def run_report(args) -> int:
    from distilvit.datatools.report import report_job

    print(report_job(args.dataset, args.out, overwrite=args.overwrite, rules_file=args.rules, model=args.model,
                     clip_model=args.clip_model, top_k=args.top_k, rare_share=args.rare_threshold, worst=args.worst,
                     sample=args.sample, seed=args.seed, batch_size=args.batch_size))
    return 0


def _add_prompts(actions) -> None:
    p = actions.add_parser(
        "synth-prompts", help="text-to-image prompts for the rare object classes of a report",
        description="For each rare object class of a `distilvit data report` folder, write text-to-image prompts "
        "(the class alone, and with the classes it appears with) with the de-bias rules applied, as JSONL "
        "{prompt, objects, original_count, type}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--report", required=True, metavar="DIR", help="the --out folder of `distilvit data report`")
    p.add_argument("--out", required=True, metavar="FILE", help="the prompts, one JSON object per line")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    _rules_option(p)
    p.add_argument("--per-class", type=positive_int, default=2, help="single-object prompts per rare class (at most 4)")
    p.add_argument("--combinations", type=int, default=2,
                   help="prompts pairing each rare class with another class (0: none)")
    p.set_defaults(run=run_prompts)


def run_prompts(args) -> int:
    from distilvit.datatools.prompts import synth_prompts_job

    if args.combinations < 0:
        from distilvit.errors import DistilViTError

        raise DistilViTError(f"--combinations must be 0 or more, got {args.combinations}")
    print(synth_prompts_job(args.report, args.out, rules_file=args.rules, per_class=args.per_class,
                            combinations=args.combinations, overwrite=args.overwrite))
    return 0
