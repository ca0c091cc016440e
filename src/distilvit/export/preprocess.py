"""Image preprocessing from a bundle manifest, with PIL and numpy only (no torch, no transformers).

Reproduces the PIL backend of the Hugging Face image processors the models use: RGB conversion, a PIL
resize with the processor's resample filter, rescaling in float64 then float32, and normalisation in
float32, so that ONNX and PyTorch see identical ``pixel_values``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from distilvit.errors import DataError

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
RESAMPLE_NAMES = {int(value): name for name, value in RESAMPLE.items()}


def preprocess_one(image: Image.Image, settings: dict) -> np.ndarray:
    """One PIL image -> ``(3, H, W)`` float32 array, as the manifest's ``image`` settings say."""
    if not isinstance(image, Image.Image):
        raise DataError(f"expected a PIL image, got {type(image).__name__}; open files with PIL.Image.open first.")
    image = image.convert("RGB")
    if settings["do_resize"]:
        height, width = settings["size"]
        image = image.resize((width, height), resample=RESAMPLE[settings["resample"]])
    pixels = np.asarray(image).transpose(2, 0, 1)
    if settings["do_rescale"]:
        pixels = (pixels.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
    else:
        pixels = pixels.astype(np.float32)
    if settings["do_normalize"]:
        mean = np.asarray(settings["image_mean"], dtype=np.float32)[:, None, None]
        std = np.asarray(settings["image_std"], dtype=np.float32)[:, None, None]
        pixels = (pixels - mean) / std
    return pixels


def preprocess(images: Sequence[Image.Image], settings: dict) -> np.ndarray:
    """PIL images -> ``(B, 3, H, W)`` float32 ``pixel_values``."""
    arrays = [preprocess_one(image, settings) for image in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:  # only possible with do_resize false
        raise DataError(f"images of different sizes {sorted(shapes)} cannot be batched without resizing.")
    return np.stack(arrays)
