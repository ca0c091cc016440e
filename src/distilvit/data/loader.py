"""``load_caption_dataset``: the one entry point that turns dataset specs into a caption dataset."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import datasets

from distilvit.data.caption_json import load_caption_json_rows
from distilvit.data.hub import load_hub_rows
from distilvit.data.imagefolder import METADATA_FILES, load_imagefolder_rows
from distilvit.data.registry import ALL_NAME, REGISTRY, SHAPES_NAME, available_datasets
from distilvit.data.rows import SourceRows
from distilvit.data.saved import is_saved_dataset, load_saved_rows
from distilvit.data.schema import ALL_SPLIT, SPLITS, check_split
from distilvit.data.shapes import ShapesConfig, load_shapes_rows
from distilvit.data.validation import assemble, choose_rows
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.data")

Spec = Union[str, os.PathLike]


@dataclass(frozen=True)
class RowCounts:
    """How many rows :func:`load_caption_rows` kept, out of how many.

    ``loaded``: rows of the returned dataset; ``in_split``: rows of the split that have a caption, before
    unreadable images are dropped and ``sample`` is applied; ``total``: rows (distinct images) of the given
    sources, all splits together, or ``None`` when unknown (a Hub set's other splits were not read).
    """

    loaded: int
    in_split: int
    total: int | None


def load_caption_dataset(
    names: Sequence[Spec] | Spec,
    split: str,
    *,
    sample: int | None = None,
    seed: int = 42,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Load and combine caption datasets into one :class:`datasets.Dataset`.

    The data contract is in ``docs/design.md``.

    Args:
        names: dataset specs: registry names (:func:`available_datasets`), ``all`` (every Hub set),
            ``shapes``, or local paths (an image folder with ``metadata.jsonl``/``metadata.csv``, a
            COCO captions JSON file, a Karpathy split JSON file, a ``save_to_disk`` folder such as
            ``distilvit data merge`` writes). Several specs are concatenated;
            a registry name wins over a local folder of the same name (write ``./name`` for the
            folder).
        split: ``train``, ``validation``, ``test``, or ``all`` (every row of the sources, whatever
            their split).
        sample: keep a reproducible (seeded) subset of this many rows of the combined split.
        seed: seed of the per-image splits, of ``sample`` and of ``shapes``.
        cache_dir: ``datasets`` cache directory for Hub sets.

    Returns:
        A dataset with the columns ``image`` (:class:`datasets.Image`), ``captions`` (list of
        non-empty strings), ``image_id`` and ``source`` (the spec each row came from), one row per
        image. Unreadable images, empty captions and rows without captions are dropped with a
        warning on the ``distilvit.data`` logger.

    Raises:
        DataError: unknown name, missing or unparseable file, bad split or sample, or no row left.
    """
    return load_caption_rows(names, split, sample=sample, seed=seed, cache_dir=cache_dir)[0]


def load_caption_rows(
    names: Sequence[Spec] | Spec,
    split: str,
    *,
    sample: int | None = None,
    seed: int = 42,
    cache_dir: str | None = None,
) -> tuple[datasets.Dataset, RowCounts]:
    """:func:`load_caption_dataset`, plus how many rows it kept out of how many (:class:`RowCounts`)."""
    check_split(split, allow_all=True)
    _check_sample(sample)
    specs = expand_specs(names)
    per_spec = [_load_source(spec, split, seed=seed, cache_dir=cache_dir) for spec in specs]
    sources = [rows for parts in per_spec for rows in parts]
    totals = [parts[0].total for parts in per_spec]
    for rows in sources:
        if not len(rows):
            logger.warning("%s has no usable rows in the %s split", rows.source, split)
    kept = choose_rows(sources, sample=sample, seed=seed)
    dataset = assemble(sources, kept)
    if dataset is None:
        raise DataError(
            f"no usable rows in the {split} split of {', '.join(specs)}: the split is empty or "
            f"every row was dropped (see the warnings of the 'distilvit.data' logger)"
        )
    total = None if None in totals else sum(totals)
    counts = RowCounts(loaded=len(dataset), in_split=sum(len(rows) for rows in sources), total=total)
    logger.info("loaded %d rows (%s split: %d with captions; %s rows in all splits) from %s", counts.loaded, split,
                counts.in_split, "unknown" if total is None else total, ", ".join(specs))
    return dataset, counts


def expand_specs(names: Sequence[Spec] | Spec) -> list[str]:
    """The specs as strings, ``all`` expanded to every Hub set, duplicates removed (order kept)."""
    if isinstance(names, (str, os.PathLike)):
        names = [names]
    specs: list[str] = []
    for name in names:
        spec = os.fspath(name)
        for expanded in list(REGISTRY) if spec == ALL_NAME else [spec]:
            if expanded not in specs:
                specs.append(expanded)
    if not specs:
        raise DataError("no dataset given: " + _choices())
    return specs


def _load_source(spec: str, split: str, *, seed: int, cache_dir: str | None) -> list[SourceRows]:
    """The rows of ``split`` of one spec (``shapes`` with ``all``: one part per split)."""
    if spec in REGISTRY:
        return [load_hub_rows(REGISTRY[spec], split, seed=seed, cache_dir=cache_dir)]
    if spec == SHAPES_NAME:
        config = ShapesConfig(seed=seed)
        return [load_shapes_rows(name, config, source=spec) for name in (SPLITS if split == ALL_SPLIT else [split])]
    path = Path(spec).expanduser()
    if is_saved_dataset(path):
        return [load_saved_rows(path, spec, split, seed=seed)]
    if path.is_dir():
        return [load_imagefolder_rows(path, spec, split, seed=seed)]
    if path.is_file():
        if path.suffix.lower() == ".json":
            return [load_caption_json_rows(path, spec, split, seed=seed)]
        raise DataError(
            f"unsupported dataset file {spec}: expected a COCO captions or Karpathy split .json "
            f"file, or an image folder with {' or '.join(METADATA_FILES)}"
        )
    if _looks_like_path(spec):
        raise DataError(f"dataset path not found: {spec} (no such file or directory). {_choices()}")
    raise DataError(f"unknown dataset {spec!r}. {_choices()}")


def _looks_like_path(spec: str) -> bool:
    """Whether an unknown spec was meant as a path rather than a registry name."""
    return os.sep in spec or "/" in spec or spec.startswith((".", "~")) or bool(Path(spec).suffix)


def _choices() -> str:
    """What may be passed as a dataset spec."""
    return (
        f"Available datasets: {', '.join(available_datasets())}, or '{ALL_NAME}' for every Hub set "
        f"({', '.join(REGISTRY)}). A local path is also accepted: an image folder with "
        f"{' or '.join(METADATA_FILES)}, a COCO captions JSON file, a Karpathy split JSON file or a "
        f"save_to_disk folder (distilvit data merge)."
    )


def _check_sample(sample: object) -> None:
    """``sample`` must be ``None`` or a positive integer."""
    if sample is None:
        return
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise DataError(f"sample must be a positive number of rows, got {sample!r}")
