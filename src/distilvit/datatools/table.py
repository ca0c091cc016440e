"""Every source distilvit reads, as one normalised table.

Columns: ``image`` (``{"bytes", "path"}``, bytes always filled so the table is self-contained),
``alt_text`` (list of strings), ``source`` (the spec, or the source recorded in a merged set),
``source_id`` (the image id within its source), ``image_hash`` (SHA-256 of the encoded image) and
``split``. Columns a merged or de-biased folder already holds (``objects``, ``original_alt_text``,
...) are kept.

A ``save_to_disk`` folder (``distilvit data merge`` or ``debias`` output) is read as it is, keeping
its splits and extra columns. Every other spec goes through :func:`distilvit.data.load_caption_dataset`
(``split="all"``, so unreadable images and empty captions are dropped exactly as for training); its
rows get the seeded split of their image content (:func:`content_split`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import datasets

from distilvit.data.loader import expand_specs, load_caption_dataset
from distilvit.data.saved import caption_column, is_saved_dataset, load_saved_tables
from distilvit.data.schema import raw_captions, string_list_feature
from distilvit.data.splits import canonical_split, hash_fraction
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.datatools")

#: The columns every normalised table has, in order.
BASE_COLUMNS: tuple[str, ...] = ("image", "alt_text", "source", "source_id", "image_hash", "split")


def base_features(extra: datasets.Features | None = None) -> datasets.Features:
    """Features of a normalised table (images not decoded), plus ``extra`` columns."""
    features = datasets.Features({
        "image": datasets.Image(decode=False),
        "alt_text": string_list_feature(),
        "source": datasets.Value("string"),
        "source_id": datasets.Value("string"),
        "image_hash": datasets.Value("string"),
        "split": datasets.Value("string"),
    })
    for name, feature in (extra or {}).items():
        if name not in features:
            features[name] = feature
    return features


def image_bytes(value: object) -> bytes:
    """The encoded bytes of an image cell (read from its path when it holds none)."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        return value["bytes"]
    if isinstance(value, dict) and value.get("path"):
        try:
            return Path(value["path"]).read_bytes()
        except OSError as err:
            raise DataError(f"cannot read image {value['path']}: {err}") from err
    raise DataError(f"an image cell holds neither bytes nor a path: {type(value).__name__}")


def content_hash(data: bytes) -> str:
    """``sha256:<hex>`` of encoded image bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_split(image_hash: str, seed: int, validation: float, test: float) -> str:
    """The split of an image from ``(seed, image content)``: the same image always lands in the same
    split, so duplicates can never leak across splits."""
    value = hash_fraction(seed, image_hash)
    if value < test:
        return "test"
    if value < test + validation:
        return "validation"
    return "train"


def read_table(specs: Sequence[str], *, seed: int = 42, validation: float = 0.05, test: float = 0.05,
               sample: int | None = None) -> datasets.Dataset:
    """Read and normalise every spec; the tables are concatenated (see the module docstring)."""
    parts = [_read_one(spec, seed=seed, validation=validation, test=test, sample=sample)
             for spec in expand_specs(list(specs))]
    extra = datasets.Features()
    for part in parts:
        for name, feature in part.features.items():
            if name not in BASE_COLUMNS and name not in extra:
                extra[name] = feature
    aligned = [_with_columns(part, extra) for part in parts]
    table = aligned[0] if len(aligned) == 1 else datasets.concatenate_datasets(aligned)
    logger.info("read %d rows from %s", len(table), ", ".join(specs))
    return table


def _read_one(spec: str, *, seed: int, validation: float, test: float, sample: int | None) -> datasets.Dataset:
    path = Path(spec).expanduser()
    if is_saved_dataset(path):
        return _read_saved(path, spec)
    loaded = load_caption_dataset(spec, "all", sample=sample, seed=seed)
    loaded = loaded.cast_column("image", datasets.Image(decode=False))

    def normalise(batch: dict) -> dict:
        images = [{"bytes": image_bytes(value), "path": _name(value)} for value in batch["image"]]
        hashes = [content_hash(image["bytes"]) for image in images]
        return {
            "image": images, "alt_text": batch["captions"], "source": batch["source"],
            "source_id": batch["image_id"], "image_hash": hashes,
            "split": [content_split(h, seed, validation, test) for h in hashes],
        }

    return loaded.map(normalise, batched=True, batch_size=256, remove_columns=loaded.column_names,
                      features=base_features(), desc=f"reading {spec}")


def _read_saved(path: Path, spec: str) -> datasets.Dataset:
    parts = []
    for name, table in load_saved_tables(path):
        column = caption_column(table, path)
        extra = datasets.Features({k: v for k, v in table.features.items()
                                   if k not in BASE_COLUMNS and k not in {column, "captions", "image_id"}})
        table = table.cast_column("image", datasets.Image(decode=False))
        options = {"column": column, "split": canonical_split(name) if name is not None else None, "name": name,
                   "spec": spec, "extra": list(extra)}
        parts.append(table.map(_normalise_saved, batched=True, batch_size=256, with_indices=True, fn_kwargs=options,
                               remove_columns=table.column_names, features=base_features(extra),
                               desc=f"reading {spec}" + (f" ({name})" if name else "")))
    if not parts:
        raise DataError(f"the saved dataset {path} has no splits")
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _normalise_saved(batch: dict, indices: list[int], *, column: str, split: str | None, name: str | None,
                     spec: str, extra: list[str]) -> dict:
    """One batch of a saved table, normalised (see :func:`read_table`)."""
    images = [{"bytes": image_bytes(value), "path": _name(value)} for value in batch["image"]]
    size = len(images)
    ids = batch.get("source_id") or batch.get("image_id") or [f"{name or 'row'}/{i}" for i in indices]
    splits = batch["split"] if split is None and "split" in batch else [split] * size
    out = {
        "image": images,
        "alt_text": [[c.strip() for c in raw_captions(v) if c.strip()] for v in batch[column]],
        "source": batch.get("source") or [spec] * size,
        "source_id": [str(i) for i in ids],
        "image_hash": [content_hash(image["bytes"]) for image in images],
        "split": [canonical_split(s) or "train" for s in splits],
    }
    out.update({k: batch[k] for k in extra})
    return out


def _with_columns(table: datasets.Dataset, extra: datasets.Features) -> datasets.Dataset:
    """``table`` with every ``extra`` column (empty values where it has none), in one column order."""
    for name, feature in extra.items():
        if name not in table.column_names:
            table = table.add_column(name, [None] * len(table), feature=feature)
    return table.select_columns([*BASE_COLUMNS, *extra]).cast(base_features(extra))


def _name(value: object) -> str | None:
    """The file name of an image cell, kept for reference (never a full local path)."""
    if isinstance(value, dict) and value.get("path"):
        return Path(str(value["path"])).name
    return None
