"""Reading a registered Hub set (:mod:`distilvit.data.registry`) into :class:`SourceRows`.

The set is loaded with :func:`datasets.load_dataset` (from the Hub id, or from the local directory
of ``DISTILVIT_HUB_OVERRIDE_<NAME>``). Only the caption, id, split and label columns are read into
Python; images stay in the Arrow cache and are referenced by position. Repos made of
``save_to_disk`` Arrow shards whose schemas disagree (a caption column that is a string in some
shards and a list in others), which :func:`datasets.load_dataset` cannot build, are read shard by
shard instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from distilvit.data.registry import HubDataset
from distilvit.data.rows import ArrowImageStore, SourceRows, select_rows
from distilvit.data.schema import ALL_SPLIT, raw_captions
from distilvit.data.splits import canonical_split
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.data")

_BATCH = 1000

# Errors that mean a bug here rather than an unavailable or malformed dataset.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, KeyError, IndexError)

Tables = list[tuple[str, datasets.Dataset]]


def load_hub_rows(
    entry: HubDataset, split: str, *, seed: int, cache_dir: str | None
) -> SourceRows:
    """The rows of ``split`` of the registered set ``entry`` (source name ``entry.name``)."""
    path = entry.load_path()
    provided = None if split == ALL_SPLIT else entry.provided_split(split)
    tables = _load_tables(entry, path, None if provided is None else [provided], cache_dir)
    rows = _rows_from_tables(entry, tables, split, seed, honour_hub_splits=provided is not None)
    if provided is not None:
        rows.total = None  # only this split's table was read
    return rows


def _load_tables(
    entry: HubDataset, path: str, splits: list[str] | None, cache_dir: str | None
) -> Tables:
    """``(hub split, table)`` pairs for ``splits`` (all splits when ``None``)."""
    options = {"cache_dir": cache_dir, "verification_mode": "no_checks"}
    try:
        if splits is None:
            return list(datasets.load_dataset(path, **options).items())
        return [(name, datasets.load_dataset(path, split=name, **options)) for name in splits]
    except DatasetGenerationError as err:
        logger.info(
            "%s: load_dataset failed (%s); reading Arrow shards one by one", entry.name, err
        )
        return _load_arrow_shards(entry, path, splits, cache_dir, err)
    except _PROGRAMMING_ERRORS:
        raise
    except Exception as err:  # network, missing repo, unknown split, bad files
        raise _load_error(entry, path, err) from err


def _load_arrow_shards(
    entry: HubDataset,
    path: str,
    splits: list[str] | None,
    cache_dir: str | None,
    original: Exception,
) -> Tables:
    """Read ``<split>/*.arrow`` shards (``save_to_disk`` layout) one table per shard."""
    try:
        if os.path.isdir(path):
            root = Path(path)
        else:
            root = Path(_download_shards(path, splits, cache_dir))
    except _PROGRAMMING_ERRORS:
        raise
    except Exception as err:
        raise _load_error(entry, path, err) from err
    tables: Tables = []
    for split_dir in sorted(child for child in root.iterdir() if child.is_dir()):
        if splits is not None and split_dir.name not in splits:
            continue
        for shard in sorted(split_dir.glob("*.arrow")):
            if not shard.name.startswith("cache-"):
                tables.append((split_dir.name, datasets.Dataset.from_file(str(shard))))
    if not tables:
        raise _load_error(entry, path, original) from original
    return tables


def _download_shards(repo_id: str, splits: list[str] | None, cache_dir: str | None) -> str:
    """Download the Arrow shards of a Hub dataset repo; returns the local snapshot directory."""
    from huggingface_hub import snapshot_download

    patterns = ["*/*.arrow"] if splits is None else [f"{name}/*.arrow" for name in splits]
    return snapshot_download(
        repo_id, repo_type="dataset", cache_dir=cache_dir, allow_patterns=patterns
    )


def _load_error(entry: HubDataset, path: str, err: Exception) -> DataError:
    """A :class:`DataError` for a set that could not be loaded."""
    return DataError(
        f"cannot load dataset {entry.name!r} from {path!r}: {type(err).__name__}: {err}. "
        f"Check the network connection (the Hugging Face Hub must be reachable, or the set "
        f"already cached in the cache directory), or set {entry.override_variable} to a local copy."
    )


def _rows_from_tables(
    entry: HubDataset, tables: Tables, split: str, seed: int, *, honour_hub_splits: bool
) -> SourceRows:
    """Read ids, captions and splits of every table and keep the rows of ``split``."""
    if not tables:
        raise DataError(f"dataset {entry.name!r} ({entry.load_path()}) has no splits")
    image_tables: list[datasets.Dataset] = []
    image_ids: list[str] = []
    captions: list[list[str]] = []
    given: list[object] = []
    positions: list[int] = []
    offset = 0
    for hub_split, table in tables:
        meta = _table_rows(entry, hub_split, table)
        for row, (image_id, row_captions, row_split) in meta.items():
            image_ids.append(image_id)
            captions.append(row_captions)
            given.append(canonical_split(hub_split) if honour_hub_splits else row_split)
            positions.append(offset + row)
        image_tables.append(_image_table(entry, table))
        offset += len(table)
    if len(image_tables) == 1:
        images = image_tables[0]
    else:
        images = datasets.concatenate_datasets(image_tables)
    return select_rows(
        entry.name,
        ArrowImageStore(images),
        image_ids=image_ids,
        captions=captions,
        given_splits=given,
        positions=positions,
        split=split,
        seed=seed,
    )


def _image_table(entry: HubDataset, table: datasets.Dataset) -> datasets.Dataset:
    """The image column alone, named ``image``, not decoded."""
    images = table.select_columns([entry.image_column])
    if entry.image_column != "image":
        images = images.rename_column(entry.image_column, "image")
    return images.cast_column("image", datasets.Image(decode=False))


def _table_rows(
    entry: HubDataset, hub_split: str, table: datasets.Dataset
) -> dict[int, tuple[str, list[str], object]]:
    """``row -> (image id, raw captions, per-row split)`` for the usable rows of one table."""
    columns = table.column_names
    if entry.image_column not in columns:
        raise DataError(
            f"dataset {entry.name!r} has no image column {entry.image_column!r} "
            f"(columns: {', '.join(columns)})"
        )
    caption_column = next((c for c in entry.caption_columns if c in columns), None)
    label = entry.label_caption
    if caption_column is None and (label is None or label.column not in columns):
        wanted = list(entry.caption_columns) + ([label.column] if label else [])
        raise DataError(
            f"dataset {entry.name!r} has none of the caption columns {', '.join(wanted)} "
            f"(columns: {', '.join(columns)})"
        )
    id_column = next((c for c in entry.id_columns if c in columns), None)
    ids = _column(table, id_column) if id_column else _content_ids(table, entry.image_column)
    splits = _column(table, entry.split_column) if entry.split_column in columns else None
    if caption_column is not None:
        texts = [raw_captions(value) for value in _column(table, caption_column)]
    else:
        texts = _label_captions(entry, table)
    rows: dict[int, tuple[str, list[str], object]] = {}
    for row, row_captions in enumerate(texts):
        if row_captions is None:
            continue
        image_id = ids[row]
        image_id = f"{hub_split}/{row}" if image_id in (None, "") else str(image_id)
        rows[row] = (image_id, row_captions, splits[row] if splits else None)
    return rows


def _label_captions(entry: HubDataset, table: datasets.Dataset) -> list[list[str] | None]:
    """Fixed captions for rows with the wanted label, ``None`` for the rows to skip."""
    label = entry.label_caption
    values = _column(table, label.column)
    result = [[label.caption] if value == label.value else None for value in values]
    skipped = sum(item is None for item in result)
    if skipped:
        logger.info(
            "%s: skipped %d of %d rows whose %s is not %r",
            entry.name, skipped, len(values), label.column, label.value,
        )
    return result


def _column(table: datasets.Dataset, name: str) -> list:
    """One non-image column as a Python list, read in batches."""
    values: list = []
    for batch in table.select_columns([name]).iter(batch_size=_BATCH):
        values.extend(batch[name])
    return values


def _content_ids(table: datasets.Dataset, column: str) -> Sequence[str]:
    """Image ids from a hash of the encoded image (for sets without an id column)."""
    ids: list[str] = []
    images = table.select_columns([column]).with_format("arrow")
    for batch in images.iter(batch_size=_BATCH):
        for value in batch.column(column).to_pylist():
            ids.append(_content_id(value))
    return ids


def _content_id(value: object) -> str:
    """``sha1:<first 20 hex digits>`` of the image bytes (or of its path when there are none)."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        data = value["bytes"]
    elif isinstance(value, dict) and value.get("path"):
        data = str(value["path"]).encode("utf-8")
    else:
        return ""
    return "sha1:" + hashlib.sha1(data).hexdigest()[:20]
