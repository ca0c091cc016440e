"""The registry of public caption datasets on the Hugging Face Hub.

Each entry is a :class:`HubDataset`: the Hub id, which columns hold the image, the captions and an
image id, and which splits the Hub set provides. ``all`` means every entry of :data:`REGISTRY`; the
procedural ``shapes`` set is built in and not part of ``all``.

What the entries assume about the Hub sets (checked against their dataset cards and the scripts that
built them):

* ``flickr``: parquet, one Hub split ``test`` holding all of Flickr30k; columns ``image``,
  ``alt_text`` (GPT-4o caption, a string), ``original_alt_text`` (the human captions, not used),
  ``img_id``, ``filename``, and ``split`` (Karpathy ``train``/``val``/``test``), which is honoured.
* ``coco``: ``save_to_disk`` Arrow shards in ``train/``, ``validation/``, ``test/``; ``alt_text`` is
  a list of strings in some shards and a string in others (such shards are read one by one).
* ``pexels``: parquet, one split ``train``; ``alt_text`` (a string).
* ``docornot``: parquet, splits ``train``/``validation``/``test``; no caption, an ``is_document``
  class label (``0`` no, ``1`` yes). Documents get a fixed caption, other images are skipped.
* ``validation``: parquet, one split ``train``; ``gpt_alt_text`` (may be empty) and ``alt_text``.

Caption cells may be a string or a list of strings in every set. When a set provides all of
``train``/``validation``/``test`` they are used as they are; otherwise every Hub split is pooled and
split per image with the seeded 90/5/5 split (or by the per-row ``split_column``), which never leaks
an image into two splits.

Testing without the Hub: set ``DISTILVIT_HUB_OVERRIDE_<NAME>`` (for instance
``DISTILVIT_HUB_OVERRIDE_FLICKR=/data/flickr-copy``) to a local directory laid out like the Hub repo
(parquet files named ``data/<split>-*.parquet``, or ``save_to_disk`` Arrow shards); it is loaded
with :func:`datasets.load_dataset` exactly like the Hub id would be.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from distilvit.data.schema import SPLITS
from distilvit.data.splits import canonical_split

#: Columns tried, in order, for a stable image id when a set does not say otherwise.
DEFAULT_ID_COLUMNS: tuple[str, ...] = (
    "image_id",
    "img_id",
    "cocoid",
    "imgid",
    "id",
    "filename",
    "file_name",
)

#: Prefix of the environment variables that point a registry entry at a local copy.
OVERRIDE_PREFIX = "DISTILVIT_HUB_OVERRIDE_"

#: Name of the built-in procedural dataset (not a Hub set, not part of ``all``).
SHAPES_NAME = "shapes"

#: Name of the built-in conversation set (questions about ``shapes`` scenes; distilvit.conversations.shapes_vqa),
#: for ``distilvit train --stage instruct`` and ``distilvit eval``.
SHAPES_VQA_NAME = "shapes-vqa"

#: The spec that expands to every registered Hub set.
ALL_NAME = "all"


@dataclass(frozen=True)
class LabelCaption:
    """A fixed caption for a classification set: rows whose ``column`` equals ``value`` get
    ``caption``, the others are skipped. Used only when no caption column exists."""

    column: str
    value: int
    caption: str


@dataclass(frozen=True)
class HubDataset:
    """How to read one public caption set from the Hugging Face Hub."""

    name: str
    hub_id: str
    hub_splits: tuple[str, ...]
    image_column: str = "image"
    caption_columns: tuple[str, ...] = ("alt_text", "gpt_alt_text")
    id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS
    split_column: str | None = None
    label_caption: LabelCaption | None = None
    description: str = ""

    @property
    def override_variable(self) -> str:
        """The environment variable that replaces the Hub id by a local path."""
        return OVERRIDE_PREFIX + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    def load_path(self) -> str:
        """What to pass to :func:`datasets.load_dataset`: the override if set, else the Hub id."""
        return os.environ.get(self.override_variable) or self.hub_id

    def provided_split(self, split: str) -> str | None:
        """The Hub split to read for ``split`` if the set's own splits are honoured, else ``None``.

        The set's splits are honoured only when it provides all of train, validation and test
        and has no per-row split column.
        """
        if self.split_column is not None:
            return None
        by_canonical = {canonical_split(name): name for name in self.hub_splits}
        if not set(SPLITS) <= set(by_canonical):
            return None
        return by_canonical[split]


REGISTRY: dict[str, HubDataset] = {
    entry.name: entry
    for entry in (
        HubDataset(
            name="flickr",
            hub_id="Mozilla/flickr30k-transformed-captions-gpt4o",
            hub_splits=("test",),
            split_column="split",
            description="Flickr30k with GPT-4o rewritten captions (Karpathy splits)",
        ),
        HubDataset(
            name="coco",
            hub_id="Mozilla/coco-gpt4o",
            hub_splits=("train", "validation", "test"),
            description="COCO images with GPT-4o alt text",
        ),
        HubDataset(
            name="pexels",
            hub_id="Mozilla/pexels-gpt4o",
            hub_splits=("train",),
            description="Pexels photos with GPT-4o alt text",
        ),
        HubDataset(
            name="docornot",
            hub_id="mozilla/docornot",
            hub_splits=("train", "validation", "test"),
            label_caption=LabelCaption("is_document", 1, "A scanned text document."),
            description="Document images (document/picture classification set)",
        ),
        HubDataset(
            name="validation",
            hub_id="Mozilla/alt-text-validation",
            hub_splits=("train",),
            caption_columns=("gpt_alt_text", "alt_text"),
            description="Web images with human-validated GPT alt text",
        ),
    )
}


def available_datasets() -> list[str]:
    """The dataset names accepted by :func:`~distilvit.data.load_caption_dataset`.

    The registered Hub sets and ``shapes``; ``all`` (every Hub set) and local paths are accepted
    too. ``shapes-vqa`` (:data:`SHAPES_VQA_NAME`) is a conversation set, not a caption set.
    """
    return [*REGISTRY, SHAPES_NAME]
