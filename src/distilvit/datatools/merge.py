"""``distilvit data merge``: many caption sources -> one deduplicated, split, publishable dataset.

Duplicates are found by the SHA-256 of the encoded image bytes (byte-identical files; re-encoded or
resized copies are different images). The first row of each image is kept, and the captions of its
duplicates are appended to it (each distinct caption once), so no caption is lost. Every image then
gets the split of its content hash under the seed (:func:`~distilvit.datatools.table.content_split`):
the same image can never be in two splits, and re-merging with the same seed gives the same splits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets

from distilvit.data.schema import SPLITS
from distilvit.datatools.table import content_split, read_table
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.datatools")


@dataclass
class MergeResult:
    """The merged splits and what happened on the way."""

    splits: datasets.DatasetDict
    rows_read: int
    duplicates_dropped: int
    per_source: dict[str, int] = field(default_factory=dict)
    seed: int = 42
    fractions: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.splits.items()}


def check_fractions(validation: float, test: float) -> None:
    for name, value in (("--val-fraction", validation), ("--test-fraction", test)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{name} must be at least 0 and below 1, got {value}")
    if validation + test >= 1.0:
        raise DataError(f"--val-fraction + --test-fraction must leave rows for training; got {validation + test}")


def merge(specs: Sequence[str], *, seed: int = 42, validation: float = 0.05, test: float = 0.05,
          sample: int | None = None) -> MergeResult:
    """Read, deduplicate and split ``specs`` (see the module docstring)."""
    check_fractions(validation, test)
    table = read_table(specs, seed=seed, validation=validation, test=test, sample=sample)
    hashes = table["image_hash"]
    first: dict[str, int] = {}
    extra_captions: dict[int, list[str]] = {}
    for row, image_hash in enumerate(hashes):
        kept = first.setdefault(image_hash, row)
        if kept != row:
            extra_captions.setdefault(kept, []).append(row)
    duplicates = len(hashes) - len(first)
    keep = sorted(first.values())
    all_captions = table["alt_text"] if extra_captions else None

    def finish(batch: dict, indices: list[int]) -> dict:
        captions, splits = [], []
        for row, own, image_hash in zip(indices, batch["alt_text"], batch["image_hash"]):
            merged = list(own)
            for other in extra_captions.get(row, ()):
                merged.extend(c for c in all_captions[other] if c not in merged)
            captions.append(merged)
            splits.append(content_split(image_hash, seed, validation, test))
        return {"alt_text": captions, "split": splits}

    deduplicated = table.select(keep).map(
        lambda batch, idx: finish(batch, [keep[i] for i in idx]), batched=True, with_indices=True,
        desc="merging duplicates")
    if not len(deduplicated):
        raise DataError(f"no rows to merge in {', '.join(specs)}")
    split_column = deduplicated["split"]
    splits = datasets.DatasetDict({
        name: deduplicated.select([i for i, s in enumerate(split_column) if s == name]).remove_columns("split")
        for name in SPLITS
    })
    sources: dict[str, int] = {}
    for source in deduplicated["source"]:
        sources[source] = sources.get(source, 0) + 1
    logger.info("merged %d rows into %d images (%d duplicate images dropped): %s", len(table), len(deduplicated),
                duplicates, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return MergeResult(splits=splits, rows_read=len(table), duplicates_dropped=duplicates, per_source=sources,
                       seed=seed, fractions={"train": 1 - validation - test, "validation": validation, "test": test})
