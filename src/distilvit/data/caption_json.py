"""Local caption JSON files: COCO captions and Karpathy splits.

**COCO captions** (``captions_train2017.json``): ``images`` (``id``, ``file_name``) and
``annotations`` (``image_id``, ``caption``). All captions of an image become one row; the image id
is the COCO ``id``. The file has no split, so images get the seeded per-image split. An image's
``file_name`` is looked up, in order, in the JSON file's folder, its ``images/`` sub-folder, and the
COCO split folder named after the file (``train2017/`` for ``captions_train2017.json``) next to the
JSON file or next to its folder (the usual ``annotations/`` + ``train2017/`` layout).

**Karpathy split** (``dataset_coco.json``, ``dataset_flickr30k.json``): ``images`` entries with
``filename``, optional ``filepath`` (``train2014``...), ``split`` (``train``, ``val``, ``restval``,
``test``) and ``sentences`` (``[{"raw": ...}]``). The split is honoured (``val`` -> ``validation``,
``restval`` -> ``train``); the image id is ``filepath/filename``. Images are looked up as
``filepath/filename`` then ``filename``, in the JSON file's folder and then its ``images/`` folder.

Images that are found nowhere keep their first candidate path, and are dropped (and counted) when
the images are checked.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from distilvit.data.rows import ListImageStore, SourceRows, select_rows
from distilvit.data.schema import raw_captions
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.data")


def load_caption_json_rows(path: Path, source: str, split: str, *, seed: int) -> SourceRows:
    """The rows of ``split`` of a COCO captions or Karpathy split JSON file."""
    data = read_json(path)
    if is_coco_captions(data):
        return _coco_rows(data, path, source, split, seed)
    if is_karpathy(data):
        return _karpathy_rows(data, path, source, split, seed)
    raise DataError(
        f"{path} is neither a COCO captions JSON (top-level 'images' and 'annotations' lists) "
        f"nor a Karpathy split JSON ('images' entries with 'filename' and 'sentences')"
    )


def read_json(path: Path) -> object:
    """Parse a JSON file, with a :class:`DataError` naming the file on failure."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(
            f"cannot parse {path}: invalid JSON at line {err.lineno}: {err.msg}"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err


def is_coco_captions(data: object) -> bool:
    """Whether ``data`` looks like a COCO captions file."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("annotations"), list)
    )


def is_karpathy(data: object) -> bool:
    """Whether ``data`` looks like a Karpathy split file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return False
    return all(
        isinstance(item, dict) and "sentences" in item and "filename" in item
        for item in data["images"][:10]
    )


def _coco_rows(data: dict, path: Path, source: str, split: str, seed: int) -> SourceRows:
    """Rows of a COCO captions file: one per image, all its captions."""
    folders = _coco_image_folders(path)
    images: list[dict] = []
    image_ids: list[str] = []
    index: dict[str, int] = {}
    for number, item in enumerate(data["images"]):
        if not isinstance(item, dict) or "id" not in item or not item.get("file_name"):
            raise DataError(f"{path}: images[{number}] needs an 'id' and a 'file_name'")
        image_id = str(item["id"])
        index.setdefault(image_id, len(image_ids))
        image_ids.append(image_id)
        images.append({"bytes": None, "path": str(_find_image(folders, [item["file_name"]]))})
    captions: list[list[str]] = [[] for _ in image_ids]
    orphans = 0
    for number, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise DataError(f"{path}: annotations[{number}] needs an 'image_id' and a 'caption'")
        row = index.get(str(annotation["image_id"]))
        if row is None:
            orphans += 1
            continue
        captions[row].extend(raw_captions(annotation.get("caption")))
    if orphans:
        logger.warning("%s: ignored %d caption(s) of image ids not in 'images'", source, orphans)
    return select_rows(
        source,
        ListImageStore(images),
        image_ids=image_ids,
        captions=captions,
        split=split,
        seed=seed,
    )


def _karpathy_rows(data: dict, path: Path, source: str, split: str, seed: int) -> SourceRows:
    """Rows of a Karpathy split file, with its own splits."""
    folders = [path.parent, path.parent / "images"]
    images: list[dict] = []
    image_ids: list[str] = []
    captions: list[list[str]] = []
    given: list[object] = []
    for number, item in enumerate(data["images"]):
        if not isinstance(item, dict) or not item.get("filename"):
            raise DataError(f"{path}: images[{number}] needs a 'filename'")
        filepath = str(item.get("filepath") or "")
        relative = f"{filepath}/{item['filename']}" if filepath else str(item["filename"])
        names = [relative, str(item["filename"])] if filepath else [relative]
        images.append({"bytes": None, "path": str(_find_image(folders, names))})
        image_ids.append(relative)
        captions.append(raw_captions(item.get("sentences")))
        given.append(item.get("split"))
    return select_rows(
        source,
        ListImageStore(images),
        image_ids=image_ids,
        captions=captions,
        given_splits=given,
        split=split,
        seed=seed,
    )


def _coco_image_folders(path: Path) -> list[Path]:
    """Where the images of a COCO captions file may be (see the module docstring)."""
    folders = [path.parent, path.parent / "images"]
    match = re.search(r"(train|val|test)(\d{4})", path.stem)
    if match:
        split_folder = match.group(0)
        folders += [path.parent / split_folder, path.parent.parent / split_folder]
    return folders


def _find_image(folders: list[Path], names: list[str]) -> Path:
    """The first existing ``folder / name``; the first candidate if none exists."""
    candidates = [folder / name for name in names for folder in folders]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]
