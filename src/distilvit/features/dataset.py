"""Training on cached features: a dataset view that yields ``image_features`` instead of images.

``distilvit train`` calls :func:`use_feature_cache` to decide, then :func:`cached_feature_sets` to encode
what is missing and wrap the train/validation sets; :class:`~distilvit.training.collator.CaptionCollator`
stacks the rows' features into ``batch["image_features"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch

from distilvit.errors import DistilViTError
from distilvit.features.encode import encode_dataset
from distilvit.features.keys import feature_key
from distilvit.features.store import FeatureReader, FeatureStore
from distilvit.paths import feature_cache_root

logger = logging.getLogger("distilvit.features")


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Rows ``{"image_features": (N_raw, D_v) tensor in the storage dtype, "captions": [str, ...]}``.

    Holds only the slot of each row (8 bytes) and the Arrow-backed captions column; features are read
    from disk per row.
    """

    def __init__(self, reader: FeatureReader, slots: np.ndarray, captions: datasets.Dataset):
        if len(slots) != len(captions):
            raise ValueError(f"{len(slots)} slots for {len(captions)} rows")
        self.reader = reader
        self.slots = slots
        self.captions = captions.select_columns(["captions"])

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> dict:
        return {
            "image_features": self.reader.read(int(self.slots[index])),
            "captions": self.captions[int(index)]["captions"],
        }


def encoder_is_frozen(model) -> bool:
    """True when no encoder weight can change during training (the condition for caching its features)."""
    config = model.config
    frozen_by_config = config.freeze_vision and config.unfreeze_vision_layers == 0
    return frozen_by_config and not any(p.requires_grad for p in model.vision_model.parameters())


def use_feature_cache(requested: bool | None, model) -> bool:
    """Resolve ``--cache-features``: ``None`` (default) = on exactly when the encoder is frozen.

    Raises:
        DistilViTError: caching was asked for but the encoder is trained (its features change every step).
    """
    frozen = encoder_is_frozen(model)
    if requested and not frozen:
        raise DistilViTError(
            "--cache-features needs a frozen encoder, but this one is trained (a scratch: preset, "
            "--unfreeze-vision-layers, or a --base-model with a trainable encoder); its features change every "
            "step. Drop --cache-features (or pass --no-cache-features)."
        )
    return frozen if requested is None else requested


def cached_feature_sets(
    model,
    processor,
    sets: Sequence[datasets.Dataset],
    *,
    dtype: str = "fp16",
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> list[CachedFeatureDataset]:
    """Encode what the cache lacks of every dataset in ``sets``; return a feature view of each.

    Args:
        sets: caption datasets (``image`` + ``captions`` columns), e.g. the train and validation splits.
        dtype: storage dtype, ``fp16`` (default), ``bf16`` or ``fp32``.
        cache_dir: feature cache folder (default :func:`~distilvit.paths.feature_cache_root`).
        device: where the encoder runs while caching.
    """
    store = FeatureStore.for_key(feature_cache_root(cache_dir), feature_key(model, processor, dtype))
    reports = [
        encode_dataset(model, processor, data, store, batch_size=batch_size, device=device, progress=progress)
        for data in sets
    ]
    reader = store.reader()
    info = store.info()
    logger.info(
        "training from cached encoder features: %s (%d entries of shape %s, %s, %.1f MB on disk)",
        store.folder, info["entries"], info["feature_shape"], info["dtype"], info["size_bytes"] / 1e6,
    )
    return [CachedFeatureDataset(reader, report.slots, data) for report, data in zip(reports, sets)]
