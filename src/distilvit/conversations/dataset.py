"""The conversation training set: samples from files or ``shapes-vqa``, images opened lazily.

``load_conversations(specs, split, image_folder=...)`` reads conversation files
(:mod:`~distilvit.conversations.formats`) and/or the built-in ``shapes-vqa``; files have no splits, so a seeded
few of their samples (at most ``eval_sample``, 5%) form ``validation``, the rest ``train``.

:class:`ConversationDataset` opens each image only in ``__getitem__``. A missing or unreadable image becomes a
blank image of the processor's input size and is counted (:attr:`ConversationDataset.bad_images`; reported at
the end of the run): the sample still trains on its text, the run never stops on it.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from PIL import Image

from distilvit.conversations import shapes_vqa
from distilvit.conversations.formats import load_conversation_file
from distilvit.data.images import open_image
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.conversations")

VALIDATION_FRACTION = 0.05


def is_conversation_spec(spec: str) -> bool:
    """``shapes-vqa``, a ``.jsonl`` file, or a ``.json`` file holding a list of records (conversations), as
    opposed to caption datasets: a COCO-captions or Karpathy ``.json`` file holds one object."""
    path = Path(str(spec))
    if spec == shapes_vqa.NAME or path.suffix == ".jsonl":
        return True
    return path.suffix == ".json" and _first_character(path) == "["


def _first_character(path: Path) -> str:
    """The first non-blank character of a text file ('' when unreadable or empty)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            while chunk := f.read(4096):
                if chunk.strip():
                    return chunk.strip()[0]
    except (OSError, UnicodeDecodeError):
        return ""
    return ""


def load_conversations(specs: list[str], split: str, *, image_folder: str | None = None, sample: int | None = None,
                       seed: int = 42, eval_sample: int | None = 200) -> list[dict]:
    """The samples of ``split`` from every spec, concatenated (``sample``: a seeded subset of N)."""
    samples: list[dict] = []
    for spec in specs:
        if spec == shapes_vqa.NAME:
            samples += shapes_vqa.vqa_samples(split, seed=seed)
        elif Path(str(spec)).suffix in (".json", ".jsonl"):
            samples += _file_split(load_conversation_file(spec, image_folder), split, seed, eval_sample)
        else:
            raise DataError(f"{spec!r} is no conversation data: give {shapes_vqa.NAME} or .json/.jsonl conversation "
                            "files (LLaVA or chat-set form).")
    if sample is not None and sample < len(samples):
        samples = random.Random(seed).sample(samples, sample)
    if not samples:
        raise DataError(f"no conversations in the {split} split of {', '.join(map(str, specs))}.")
    return samples


def _file_split(samples: list[dict], split: str, seed: int, eval_sample: int | None) -> list[dict]:
    """Seeded split of a file's samples: a few for validation (and test), the rest for training."""
    if len(samples) < 2:
        return samples  # too few to hold any out: validate on the training sample
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    count = max(1, min(eval_sample or 1, int(len(samples) * VALIDATION_FRACTION)))
    held = set(order[:count])
    return [s for i, s in enumerate(samples) if (i in held) == (split != "train")]


class ConversationDataset(torch.utils.data.Dataset):
    """Rows ``{"messages", "image": PIL image or None}``; see the module docstring for bad images."""

    def __init__(self, samples: list[dict], image_size: tuple[int, int]):
        self.samples = samples
        self.image_size = image_size
        self.bad_images: dict[str, str] = {}  # sample id -> reason

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        return {"messages": sample["messages"], "image": self.image(sample)}

    def image(self, sample: dict):
        source = sample.get("image")
        if source is None:
            return None
        try:
            return source() if callable(source) else open_image(source)
        except (DataError, OSError, ValueError) as err:
            if sample["id"] not in self.bad_images:
                logger.warning("sample %s: %s; using a blank image", sample["id"], err)
            self.bad_images[sample["id"]] = str(err)
            return Image.new("RGB", (self.image_size[1], self.image_size[0]), (0, 0, 0))

    def report(self) -> str | None:
        """One line about the images that could not be read (None when all could)."""
        if not self.bad_images:
            return None
        shown = ", ".join(list(self.bad_images)[:5])
        return (f"{len(self.bad_images)} image(s) could not be read and were replaced by blank images "
                f"(samples {shown}{', ...' if len(self.bad_images) > 5 else ''})")


def processor_image_size(processor) -> tuple[int, int]:
    """``(height, width)`` of the images the processor produces (the size of a blank replacement image)."""
    size = getattr(processor.image_processor, "size", None) or {}
    if "height" in size:
        return size["height"], size["width"]
    side = size.get("shortest_edge", 224)
    return side, side
