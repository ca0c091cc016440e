"""Local image folders in the Hugging Face ``imagefolder`` convention.

A directory is an image folder when it holds ``metadata.jsonl`` or ``metadata.csv``, either at its
top level or in split sub-folders (``train/``, ``validation/`` (or ``val/``, ``valid/``, ``dev/``),
``test/``). Each metadata row has a ``file_name`` (relative to the metadata file) and a caption
column: the first present of ``captions``, ``caption``, ``text``, ``gpt_alt_text``, ``alt_text``.
A caption cell may be a string or a list of strings (in CSV, a JSON list such as ``["a", "b"]``).
Rows repeating a ``file_name`` are merged into one row with all their captions.

Splits: a split sub-folder, else a ``split`` column of the row (``train``/``val``/``test``...),
else the seeded per-image split. The image id is the image path relative to the folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from distilvit.data.rows import ListImageStore, SourceRows, select_rows
from distilvit.data.schema import raw_captions
from distilvit.data.splits import SPLIT_ALIASES
from distilvit.errors import DataError

METADATA_FILES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv")

#: Caption columns, in order of preference.
CAPTION_COLUMNS: tuple[str, ...] = ("captions", "caption", "text", "gpt_alt_text", "alt_text")


def find_metadata(root: Path) -> list[tuple[Path, str | None]]:
    """The metadata files of an image folder, each with the split named by its sub-folder.

    The split is ``None`` for metadata files at the top level.
    """
    found: list[tuple[Path, str | None]] = []
    for name in METADATA_FILES:
        if (root / name).is_file():
            found.append((root / name, None))
    for child in sorted(root.iterdir()):
        split = SPLIT_ALIASES.get(child.name.lower())
        if split is None or not child.is_dir():
            continue
        for name in METADATA_FILES:
            if (child / name).is_file():
                found.append((child / name, split))
    return found


def load_imagefolder_rows(root: Path, source: str, split: str, *, seed: int) -> SourceRows:
    """The rows of ``split`` of the image folder ``root``."""
    metadata = find_metadata(root)
    if not metadata:
        raise DataError(
            f"{root} is not an image folder: no {' or '.join(METADATA_FILES)} in it "
            f"(nor in train/, validation/ or test/ sub-folders). Add one with a 'file_name' "
            f"column and a caption column ({', '.join(CAPTION_COLUMNS)})."
        )
    images: list[dict] = []
    image_ids: list[str] = []
    captions: list[list[str]] = []
    given: list[object] = []
    for path, folder_split in metadata:
        for record in _records(path):
            image_path = path.parent / record["file_name"]
            images.append({"bytes": None, "path": str(image_path)})
            image_ids.append(_relative_id(image_path, root))
            captions.append(raw_captions(record["caption"]))
            given.append(folder_split or record.get("split"))
    return select_rows(
        source,
        ListImageStore(images),
        image_ids=image_ids,
        captions=captions,
        given_splits=given,
        split=split,
        seed=seed,
    )


def _records(path: Path) -> list[dict]:
    """Rows of one metadata file as ``{"file_name", "caption", "split"}`` dicts."""
    rows = _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if "file_name" not in columns:
        raise DataError(f"{path}: no 'file_name' column (columns: {', '.join(columns) or 'none'})")
    caption_column = next((name for name in CAPTION_COLUMNS if name in columns), None)
    if caption_column is None:
        raise DataError(
            f"{path}: no caption column; expected one of {', '.join(CAPTION_COLUMNS)} "
            f"(columns: {', '.join(columns)})"
        )
    records = []
    for number, row in enumerate(rows, start=1):
        file_name = row.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            raise DataError(f"{path}: row {number} has no file_name")
        records.append(
            {
                "file_name": file_name.strip(),
                "caption": row.get(caption_column),
                "split": row.get("split"),
            }
        )
    return records


def _read_jsonl(path: Path) -> list[dict]:
    """Parse a JSON-lines file of objects."""
    rows: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict]:
    """Parse a CSV file with a header row."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle, strict=True)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot parse {path}: {err}") from err


def _relative_id(image_path: Path, root: Path) -> str:
    """The image path relative to ``root`` (POSIX separators), or as given if outside it."""
    try:
        return image_path.relative_to(root).as_posix()
    except ValueError:
        return image_path.as_posix()
