"""Up-front checks of command-line options: a bad value fails in one line (exit 2) before any heavy work.

Ranges argparse cannot express on its own (``--warmup-steps`` >= 0, ``--lora-dropout`` in [0, 1), the
``--vision-feature-layer`` range of the chosen encoder, ...), contradictions (``--no-lora`` with LoRA options
given explicitly), output paths that are files, and local model folders (checked with
:func:`distilvit.model.files.check_model_folder`) are checked here, so that a mistake surfaces before the
dataset is loaded, images are captioned or a model is trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distilvit.errors import DistilViTError
from distilvit.paths import cache_subdir

GIVEN = "given_options"  # Namespace attribute: the flags (of Given/GivenFlag options) present on the command line


class Given(argparse.Action):
    """``store``, and remember that the option was given on the command line (``args.given_options``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, GIVEN, set(getattr(namespace, GIVEN, set())) | {option_string})


class GivenFlag(Given):
    """``store_true`` that is remembered like :class:`Given`."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, const=True, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, self.const, option_string)


def given(args: argparse.Namespace) -> set[str]:
    """The :class:`Given` flags present on the command line."""
    return set(getattr(args, GIVEN, set()))


def check_output_folder(flag: str, path: str | Path) -> None:
    """Raise :class:`DistilViTError` when ``path`` (or a folder above it) exists as a file: it cannot be a folder."""
    path = Path(path).expanduser()
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                what = "is a file" if existing == path else f"cannot be a folder: {existing} is a file"
                raise DistilViTError(f"{flag} {path} {what}; give a new or existing folder.")
            return


def check_local_model(path: str | None, what: str = "model folder") -> None:
    """Check a model folder that exists on this machine now (names that are not local paths are left to the
    loaders, which resolve Hub ids)."""
    if path and Path(path).expanduser().exists():
        from distilvit.model.files import check_model_folder

        check_model_folder(path, what)


def _at_least(args, floor: float, *names: str, inclusive: bool = True) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and (value < floor if inclusive else value <= floor):
            relation = f">= {floor:g}" if inclusive else f"greater than {floor:g}"
            raise DistilViTError(f"--{name.replace('_', '-')} must be {relation}, got {value:g}.")


LORA_FLAGS = ("--lora-r", "--lora-alpha", "--lora-dropout", "--lora-target-modules", "--lora-lr", "--merge-lora")


def check_train_args(args: argparse.Namespace) -> None:
    """Raise :class:`DistilViTError` for ``distilvit train`` options that are out of range or contradict."""
    _at_least(args, 0, "warmup_steps", "weight_decay", "eval_captions", "num_workers")
    _at_least(args, 0, "num_train_epochs", "projection_lr", "lora_lr", "vision_lr", "learning_rate", inclusive=False)
    _at_least(args, -1, "unfreeze_vision_layers")
    if args.max_steps == 0 or args.max_steps < -1:
        raise DistilViTError(f"--max-steps must be a positive number of steps, or -1 to train for --num-train-epochs; "
                             f"got {args.max_steps}.")
    if not 0 <= args.lora_dropout < 1:
        raise DistilViTError(f"--lora-dropout must be in [0, 1), got {args.lora_dropout:g}.")
    contradicting = [flag for flag in LORA_FLAGS if flag in given(args)]
    if args.no_lora and contradicting and args.architecture == "prefix":  # encoder-decoder: no LoRA at all (its own check)
        raise DistilViTError(f"--no-lora trains no LoRA adapters, so {', '.join(contradicting)} cannot be used with it; "
                             "drop one or the other.")
    for flag in ("--checkpoints-dir", "--save-dir"):
        folder = getattr(args, flag[2:].replace("-", "_"))
        if folder is not None:  # --checkpoints-dir defaults to <save-dir>-checkpoints, beside --save-dir
            check_output_folder(flag, folder)
    if args.base_model:
        check_local_model(args.base_model, "base model (--base-model)")
    elif args.vision_feature_layer != -1 and args.architecture == "prefix":
        check_encoder_feature_layer(args.encoder_model, args.vision_feature_layer, cache_subdir(args.cache_dir, "models"))


def check_encoder_feature_layer(encoder: str, layer: int, cache_dir: str | None = None) -> None:
    """``--vision-feature-layer`` against the encoder's config (read only: no weights are loaded)."""
    from distilvit.model.parts import encoder_config
    from distilvit.model.vision import check_feature_layer

    check_feature_layer(encoder_config(encoder, cache_dir), layer)


def check_generation_args(args: argparse.Namespace) -> None:
    """Raise :class:`DistilViTError` for decoding options out of range (``--top-p 2``, ``--top-k 0``, ...)."""
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise DistilViTError(f"--top-p must be in (0, 1], got {args.top_p:g}.")
    _at_least(args, 1, "top_k")
    _at_least(args, 0, "no_repeat_ngram_size")
    _at_least(args, 0, "repetition_penalty", inclusive=False)
