"""Opening and checking images.

:func:`open_image` is the one way the project opens a user-supplied image (the ``caption`` command,
evaluation): it accepts a path, raw bytes, a ``datasets`` image dict or a PIL image, guards against
decompression bombs, and raises :class:`~distilvit.errors.DataError` with the path and the reason
when the image cannot be read. :func:`image_problem` is the cheap check used to drop unreadable rows
from a dataset.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from distilvit.errors import DataError

#: Largest image accepted by default (width x height), a guard against decompression bombs.
DEFAULT_MAX_PIXELS = 50_000_000

#: Side of the thumbnail JPEGs are decoded to when an image is only being checked.
_CHECK_DRAFT_SIZE = (64, 64)

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Mapping, Image.Image]


def open_image(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``image`` and return it fully decoded, EXIF-rotated and converted to RGB.

    ``image`` may be a path, encoded bytes, a ``datasets`` image dict (``{"bytes", "path"}``) or a
    PIL image. Transparent images are put on a white background. Raises :class:`DataError`
    ("cannot read image <path>: <reason>") for a missing, unreadable or too large image.
    """
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    label = describe_image(image)
    try:
        with _open(image, max_pixels) as opened:
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            return _to_rgb(oriented)
    except _ImageTooLarge as err:
        raise DataError(f"cannot read image {label}: {err}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {label}: {explain_error(err)}") from err


def image_problem(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Return why ``image`` cannot be decoded, or ``None`` when it can.

    Cheaper than :func:`open_image`: JPEGs are decoded at reduced scale, nothing is converted.
    """
    try:
        with _open(image, max_pixels) as opened:
            if opened.format == "JPEG":
                opened.draft("RGB", _CHECK_DRAFT_SIZE)
            opened.load()
    except _ImageTooLarge as err:
        return str(err)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return explain_error(err)
    return None


def describe_image(image: object) -> str:
    """A short human-readable name of an image input, for messages."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, Mapping) and image.get("path"):
        return str(image["path"])
    if isinstance(image, Image.Image):
        return "<PIL image>"
    return "<image bytes>"


def explain_error(err: BaseException) -> str:
    """A readable reason for an exception raised while opening an image."""
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    if isinstance(err, UnidentifiedImageError):
        return "cannot identify image file (not an image, or corrupt)"
    if isinstance(err, Image.DecompressionBombError):
        return f"image too large ({err})"
    text = str(err).strip()
    return text or type(err).__name__


class _ImageTooLarge(Exception):
    """Raised internally when an image exceeds ``max_pixels``."""


def _open(image: ImageInput, max_pixels: int) -> Image.Image:
    """Open (lazily, header only) and check the pixel count against ``max_pixels``."""
    source = _file_or_buffer(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source)
        except Image.DecompressionBombWarning as err:
            raise _ImageTooLarge(f"image too large ({err})") from None
    pixels = opened.width * opened.height
    if pixels > max_pixels:
        opened.close()
        raise _ImageTooLarge(
            f"image too large: {opened.width}x{opened.height} = {pixels:,} pixels, "
            f"more than the limit of {max_pixels:,} (raise max_pixels if you trust this file)"
        )
    return opened


def _file_or_buffer(image: ImageInput):
    """What :func:`PIL.Image.open` should read for ``image``."""
    if image is None:
        raise ValueError("no image in this row")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(image))
    if isinstance(image, Mapping):
        if image.get("bytes") is not None:
            return io.BytesIO(image["bytes"])
        if image.get("path"):
            return os.fspath(image["path"])
        raise ValueError("image dict has neither bytes nor a path")
    raise TypeError(f"unsupported image input: {type(image).__name__}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert to RGB, compositing transparent images on white."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
