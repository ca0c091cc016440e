"""Option groups shared by several sub-commands."""

from __future__ import annotations

import argparse

from distilvit.cli.checks import check_generation_args
from distilvit.errors import DistilViTError


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_revision_option(parser: argparse.ArgumentParser, what: str = "MODEL") -> None:
    parser.add_argument("--revision", default=None, metavar="REV",
                        help=f"when {what} is a Hugging Face Hub id (owner/name): the branch, tag or commit hash to "
                        "download (default: the default branch). Only safetensors/JSON/text files are fetched, into "
                        "the Hugging Face cache; with HF_HUB_OFFLINE=1 only the cache is read")


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding (default: deterministic greedy search)")
    group.add_argument("--max-new-tokens", type=positive_int, default=40, help="longest caption, in tokens")
    group.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (1 = greedy)")
    group.add_argument("--length-penalty", type=float, default=None, help="beam search length penalty (>1 favours longer)")
    group.add_argument("--do-sample", action="store_true", help="sample instead of searching")
    group.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    group.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    group.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass")
    group.add_argument("--seed", type=int, default=None, help="random seed for sampling (reproducible output)")
    group.add_argument("--repetition-penalty", type=float, default=None, help="penalise repeated tokens (>1)")
    group.add_argument("--no-repeat-ngram-size", type=int, default=None, help="forbid repeating n-grams of this size")
    group.add_argument("--ban", nargs="+", default=[], metavar="WORD", help="words the caption must never contain")


def generation_kwargs(args: argparse.Namespace) -> dict:
    """The decoding options of ``args`` as keyword arguments for ``generate_captions``."""
    if (args.temperature is not None or args.top_k is not None or args.top_p is not None) and not args.do_sample:
        raise DistilViTError("--temperature/--top-k/--top-p only apply with --do-sample.")
    if args.temperature is not None and args.temperature <= 0:
        raise DistilViTError("--temperature must be greater than 0.")
    check_generation_args(args)
    kwargs = {
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "length_penalty": args.length_penalty,
        "do_sample": args.do_sample,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "repetition_penalty": args.repetition_penalty,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
    }
    if args.ban:
        kwargs["banned_words"] = list(args.ban)
    return {k: v for k, v in kwargs.items() if v is not None}
