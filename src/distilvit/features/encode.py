"""Encode the images of a caption dataset once and put their features into a :class:`FeatureStore`.

Images are read straight from the dataset's Arrow storage in batches (``with_format("arrow")``: no
decoding) and hashed; only images the store does not hold yet are decoded, preprocessed and encoded.
Memory stays flat: one batch of images and one batch of features at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from distilvit.errors import DataError
from distilvit.features.keys import image_digest
from distilvit.features.store import FeatureStore

logger = logging.getLogger("distilvit.features")


@dataclass
class EncodeReport:
    """Outcome of :func:`encode_dataset`."""

    slots: np.ndarray  # (rows,) int64: the store slot of each dataset row
    encoded: int  # images encoded now (the others were in the store already)


def _image_feature(dataset: datasets.Dataset) -> datasets.Image:
    feature = dataset.features.get("image")
    if not isinstance(feature, datasets.Image):
        raise DataError("caching features needs a dataset with an `image` column of type datasets.Image.")
    return feature


def _decode(feature: datasets.Image, value):
    try:
        return feature.decode_example(value)
    except Exception as err:  # PIL and file errors of many kinds
        raise DataError(f"cannot decode image {value.get('path') or '(embedded bytes)'}: {err}") from err


@torch.no_grad()
def encode_images_to_features(model, processor, images, device) -> torch.Tensor:
    """PIL ``images`` -> ``(B, N_raw, D_v)`` raw encoder features (``model.encode_images``), on CPU."""
    pixels = processor.pixel_values(images).to(device)
    return model.encode_images(pixels).float().cpu()


@torch.no_grad()
def encode_dataset(
    model,
    processor,
    dataset: datasets.Dataset,
    store: FeatureStore,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "caching encoder features",
) -> EncodeReport:
    """Make sure ``store`` holds the features of every image of ``dataset``; return each row's slot.

    Args:
        model: a :class:`~distilvit.model.DistilViTForCaptioning`; its encoder runs in eval mode (restored after).
        processor: the model's :class:`~distilvit.model.CaptionProcessor`.
        dataset: rows with an ``image`` column (``datasets.Image``).
        store: the store of ``feature_key(model, processor, dtype)``.
        batch_size: images read, hashed and encoded at a time.
        device: where the encoder runs (default: where it is); it is moved back afterwards.
    """
    feature = _image_feature(dataset)
    table = dataset.with_format("arrow")
    vision = model.vision_model
    home = next(vision.parameters()).device
    device = torch.device(device) if device is not None else home
    was_training = vision.training
    vision.to(device).eval()
    slots = np.empty(len(dataset), dtype=np.int64)
    try:
        with store.writer() as writer, tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress) as bar:
            for start in range(0, len(dataset), batch_size):
                values = table[start : start + batch_size]["image"].to_pylist()
                digests = [image_digest(value, feature.mode) for value in values]
                missing = {d: v for d, v in zip(digests, values) if writer.lookup(d) is None}
                if missing:
                    images = [_decode(feature, v) for v in missing.values()]
                    writer.append(list(missing), encode_images_to_features(model, processor, images, device))
                slots[start : start + len(values)] = [writer.lookup(d) for d in digests]
                bar.update(len(values))
                bar.set_postfix(encoded=writer.written, refresh=False)
            encoded = writer.written
    finally:
        vision.to(home).train(was_training)
    logger.info("feature cache %s: %d images encoded, %d read from the cache", store.folder, encoded,
                len(dataset) - encoded)
    return EncodeReport(slots=slots, encoded=encoded)
