"""The standard columns every caption dataset is converted to, and caption normalisation.

Every loader in this package returns rows with exactly these columns (see ``docs/design.md``):

* ``image``: :class:`datasets.Image` (decoded to a PIL image on access),
* ``captions``: list of whitespace-stripped, non-empty strings,
* ``image_id``: string, unique within the source,
* ``source``: the dataset spec the row came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import datasets

from distilvit.errors import DataError

#: Column names of a caption dataset, in order.
COLUMNS: tuple[str, ...] = ("image", "captions", "image_id", "source")

#: The split names accepted by :func:`distilvit.data.load_caption_dataset`.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Every row of the given sources, whatever their split (``distilvit eval --split all``).
ALL_SPLIT = "all"


def string_list_feature():
    """A list-of-strings feature (``datasets.List`` since datasets 4, ``Sequence`` before)."""
    list_type = getattr(datasets, "List", None) or datasets.Sequence
    return list_type(datasets.Value("string"))


def caption_features(*, decode: bool = True) -> datasets.Features:
    """Return the :class:`datasets.Features` of a caption dataset.

    ``decode=False`` keeps images as ``{"bytes", "path"}`` dicts, which is how rows are handled
    internally until their images have been checked.
    """
    return datasets.Features(
        {
            "image": datasets.Image(decode=decode),
            "captions": string_list_feature(),
            "image_id": datasets.Value("string"),
            "source": datasets.Value("string"),
        }
    )


def check_split(split: str, *, allow_all: bool = False) -> str:
    """Return ``split`` if it is one of :data:`SPLITS` (or :data:`ALL_SPLIT` with ``allow_all``), else raise
    :class:`DataError`."""
    names = SPLITS + (ALL_SPLIT,) if allow_all else SPLITS
    if split not in names:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(names)}")
    return split


def raw_captions(value: object) -> list[str]:
    """Turn one caption cell into a list of strings (not yet stripped or filtered).

    Accepts ``None``, a string, a JSON-encoded list of strings (as found in CSV files), a list or
    tuple of strings (nested lists are flattened), and mappings with a ``raw`` or ``caption`` key
    (Karpathy ``sentences`` entries). Anything else is converted with ``str``.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return _string_captions(value)
    if isinstance(value, Mapping):
        for key in ("raw", "caption", "text"):
            if key in value:
                return raw_captions(value[key])
        return []
    if isinstance(value, Iterable):
        captions: list[str] = []
        for item in value:
            captions.extend(raw_captions(item))
        return captions
    return [str(value)]


def _string_captions(text: str) -> list[str]:
    """A string caption, or several if the string is a JSON list such as ``'["a", "b"]'``."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            decoded = json.loads(stripped)
        except json.JSONDecodeError:
            return [text]
        if isinstance(decoded, list):
            return raw_captions(decoded)
    return [text]


def clean_captions(captions: Iterable[str]) -> tuple[list[str], int]:
    """Strip every caption and drop the empty ones.

    Returns the kept captions and how many were removed.
    """
    kept = [caption.strip() for caption in captions]
    non_empty = [caption for caption in kept if caption]
    return non_empty, len(kept) - len(non_empty)
