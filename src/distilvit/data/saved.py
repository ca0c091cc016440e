"""Local folders written by ``datasets.save_to_disk`` (a :class:`datasets.DatasetDict` or one
:class:`datasets.Dataset`), such as the output of ``distilvit data merge`` and ``distilvit data debias``.

A folder is such a set when it holds ``dataset_dict.json`` (splits in sub-folders) or ``state.json``
(one table). The image column is ``image``; the caption column is the first present of ``alt_text``,
``captions``, ``caption``, ``text``; the image id is ``image_hash`` (unique in a merged set), ``source_id`` or ``image_id`` (else the row
position). Splits: the DatasetDict's own split names (``val`` -> ``validation``...), else a ``split``
column, else the seeded per-image split. The tables are memory-mapped, never copied.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from distilvit.data.rows import ArrowImageStore, SourceRows, select_rows
from distilvit.data.schema import raw_captions
from distilvit.data.splits import canonical_split
from distilvit.errors import DataError

#: Caption columns, in order of preference.
CAPTION_COLUMNS: tuple[str, ...] = ("alt_text", "captions", "caption", "text")
#: Image id columns, in order of preference.
ID_COLUMNS: tuple[str, ...] = ("image_hash", "source_id", "image_id")


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def load_saved_tables(path: Path) -> list[tuple[str | None, datasets.Dataset]]:
    """``(split name or None, table)`` pairs of a ``save_to_disk`` folder."""
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, FileNotFoundError) as err:
        raise DataError(f"cannot read the saved dataset {path}: {type(err).__name__}: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        return list(loaded.items())
    return [(None, loaded)]


def caption_column(table: datasets.Dataset, where: object) -> str:
    """The caption column of ``table`` (see :data:`CAPTION_COLUMNS`)."""
    found = next((name for name in CAPTION_COLUMNS if name in table.column_names), None)
    if found is None or "image" not in table.column_names:
        raise DataError(f"{where}: a saved caption dataset needs an 'image' column and one of "
                        f"{', '.join(CAPTION_COLUMNS)} (columns: {', '.join(table.column_names)})")
    return found


def load_saved_rows(path: Path, source: str, split: str, *, seed: int) -> SourceRows:
    """The rows of ``split`` of the ``save_to_disk`` folder ``path``."""
    tables = [(name, table) for name, table in load_saved_tables(path) if len(table)]
    if not tables:
        raise DataError(f"the saved dataset {path} has no rows")
    image_ids: list[str] = []
    captions: list[list[str]] = []
    given: list[object] = []
    for name, table in tables:
        column = caption_column(table, path)
        id_column = next((c for c in ID_COLUMNS if c in table.column_names), None)
        ids = table[id_column] if id_column else [f"{name or 'row'}/{row}" for row in range(len(table))]
        splits = table["split"] if name is None and "split" in table.column_names else [name] * len(table)
        image_ids.extend(str(value) for value in ids)
        captions.extend(raw_captions(value) for value in table[column])
        given.extend(canonical_split(value) for value in splits)
    images = [table.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
              for _, table in tables]
    store = ArrowImageStore(images[0] if len(images) == 1 else datasets.concatenate_datasets(images))
    return select_rows(source, store, image_ids=image_ids, captions=captions, given_splits=given,
                       split=split, seed=seed)
