"""Writing a dataset folder: ``save_to_disk`` Arrow files, Parquet shards and a dataset card.

Layout of ``OUT``::

    dataset_dict.json, train/, validation/, test/   # datasets.save_to_disk (what --dataset OUT reads)
    data/<split>-00000-of-0000N.parquet              # the same rows as Parquet shards (the Hub layout)
    README.md                                        # the dataset card, with the counts
    <extra files>                                    # e.g. debias_changes.json

Empty splits are left out (``datasets`` cannot read an empty saved split back). The folder is built next to ``OUT`` and renamed into place, so an interrupted run never leaves a
half-written dataset. An existing ``OUT`` is refused unless ``overwrite``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import datasets

from distilvit.errors import DataError

#: Rows per Parquet shard at most.
ROWS_PER_SHARD = 5000


def check_out_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Refuse an existing non-empty ``out`` unless ``overwrite`` (checked before any work)."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"--out {path} is a file; give a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DataError(f"--out {path} already exists and is not empty; choose another folder or add --overwrite")
    return path


def parquet_files(splits: datasets.DatasetDict) -> dict[str, list[tuple[str, datasets.Dataset]]]:
    """``split -> [(data/<split>-i-of-n.parquet, rows)]``."""
    plan = {}
    for name, table in splits.items():
        count = max(1, math.ceil(len(table) / ROWS_PER_SHARD))
        plan[name] = [(f"data/{name}-{i:05d}-of-{count:05d}.parquet", table.shard(count, i, contiguous=True))
                      for i in range(count)]
    return plan


def write_dataset(splits: datasets.DatasetDict, out: str | Path, card: str, *, overwrite: bool,
                  extra_files: dict[str, str] | None = None) -> Path:
    """Write ``splits`` to ``out`` (see the module docstring); returns the folder."""
    target = check_out_dir(out, overwrite=overwrite)
    # an empty split cannot be read back by datasets.load_from_disk: it is left out (the card says 0)
    splits = datasets.DatasetDict({name: table for name, table in splits.items() if len(table)})
    if not splits:
        raise DataError("no rows to write")
    staging = staging_dir(target)
    try:
        splits.save_to_disk(str(staging))
        for shards in parquet_files(splits).values():
            for relative, rows in shards:
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                rows.to_parquet(str(staging / relative))
        (staging / "README.md").write_text(card, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def staging_dir(target: Path) -> Path:
    """A new empty folder next to ``target``, to be :func:`publish`-ed as ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def publish(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` folder in place of ``target`` (renames; the old one is removed)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
