"""Where ``distilvit eval`` writes its report, and when it may replace what is there.

* Default folder: ``eval-<model folder name>`` in the current directory (``eval-my-captioner``), so that
  reports of different models never share a folder by default.
* A folder that already holds a report is replaced only when it is the report of the same evaluation (same
  model, datasets, split, sample and decoding: a re-run), or with ``overwrite=True``; the old report's files
  are removed first, so no stale thumbnail or report format is left behind.
* A non-empty folder that holds no report is never written into: its files are not ours.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distilvit.errors import DistilViTError

#: the files and folders a report consists of (written by :mod:`distilvit.evaluation.report` and ``run``)
REPORT_FILES = ("metrics.json", "report.html", "report.md", "predictions.jsonl", "images")
#: the ``metrics.json`` ``info`` fields that say which evaluation a report is of
IDENTITY_KEYS = ("model", "revision", "datasets", "split", "sample", "generation", "blind", "image_folder")


def default_out_dir(model: str) -> Path:
    """``eval-<last part of the model path or Hub id>``, in the current directory."""
    name = Path(str(model).rstrip("/\\")).name or "model"
    return Path(f"eval-{name}")


def check_out_dir(out_dir: str | Path, identity: Mapping[str, Any], *, overwrite: bool) -> Path:
    """Check, before any work, that ``out_dir`` may take the report of ``identity``.

    Raises :class:`DistilViTError` when the folder holds another evaluation's report (unless ``overwrite``)
    or files that are not a report.
    """
    out = Path(out_dir)
    if not out.is_dir() or not any(out.iterdir()):
        return out
    metrics = out / "metrics.json"
    if not metrics.is_file():
        raise DistilViTError(f"{out} is a folder with other files in it (no metrics.json: not an evaluation "
                             "report); distilvit eval does not write into it. Pass --out with a new or empty folder.")
    different = _differences(_read_identity(metrics), identity)
    if different and not overwrite:
        raise DistilViTError(f"{out} holds the report of another evaluation ({'; '.join(different)}); pass "
                             "--overwrite to replace it, or --out with another folder.")
    return out


def clear_report(out_dir: str | Path) -> None:
    """Remove the files of an old report from ``out_dir`` (checked by :func:`check_out_dir`), just before the
    new one is written, so that nothing of the old one is left behind."""
    out = Path(out_dir)
    for name in REPORT_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _read_identity(metrics: Path) -> dict[str, Any]:
    try:
        info = json.loads(metrics.read_text(encoding="utf-8")).get("info", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return info if isinstance(info, dict) else {}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each identity field that differs (as stored in JSON)."""
    fresh = json.loads(json.dumps(dict(new), default=str))
    return [f"{key}: {old.get(key)!r} there, {fresh.get(key)!r} now" for key in IDENTITY_KEYS
            if old.get(key) != fresh.get(key)]
