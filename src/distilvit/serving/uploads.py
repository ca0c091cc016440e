"""Turning uploaded files into images, or into the 4xx that says why they cannot be captioned.

Every check runs before the expensive part: the content type before reading, the pixel count from the
image header before decoding (decompression bombs), and decoding before the image reaches the model.
Only the raster formats in :data:`ALLOWED_FORMATS` are opened (PIL plug-ins for exotic formats never see
the bytes). Nothing is ever fetched from a URL: the API takes uploaded bytes only.
"""

from __future__ import annotations

import io
import logging

from PIL import Image, ImageOps, UnidentifiedImageError

from distilvit.data.images import open_image
from distilvit.serving.limits import APIError

logger = logging.getLogger("distilvit.serving")

#: PIL formats the server decodes (the JPEG plug-in also opens the MPO files many phone cameras write).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

#: Content types accepted without a look at the bytes besides ``image/*`` (clients that do not know the type).
GENERIC_TYPES = ("", "application/octet-stream")

SUPPORTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"

Image.init()  # register every plug-in now: Image.open(formats=...) fails on formats not yet registered


def _label(index: int, filename: str | None) -> str:
    return f"image {index + 1}" + (f" ({filename!r})" if filename else "")


def check_content_type(content_type: str | None, index: int, filename: str | None) -> None:
    """415 unless ``content_type`` is ``image/*`` or generic (missing / ``application/octet-stream``)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith("image/") or media in GENERIC_TYPES:
        return
    raise APIError(
        415, "unsupported_media_type",
        f"{_label(index, filename)} was sent as {media!r}, which is not an image. Upload {SUPPORTED} files "
        "in the multipart field 'images' (URLs are not fetched).",
    )


def decode_image(data: bytes, *, max_pixels: int, index: int = 0, filename: str | None = None) -> Image.Image:
    """Decode one uploaded image to an EXIF-rotated RGB PIL image.

    Raises :class:`APIError` 400 for empty or undecodable bytes and 413 for an image over ``max_pixels``
    (checked from the header, before the pixels are decoded).
    """
    label = _label(index, filename)
    if not data:
        raise APIError(400, "empty_image", f"{label} is empty (0 bytes). Upload the image file's contents.")
    try:
        opened = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as err:
        raise _too_large(label, max_pixels, str(err)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise _undecodable(label, err) from None
    with opened:
        pixels = opened.width * opened.height
        if pixels > max_pixels:
            raise _too_large(label, max_pixels, f"{opened.width}x{opened.height} = {pixels:,} pixels")
        try:
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            return open_image(oriented)  # RGB, transparency on white, as for `distilvit caption`
        except Image.DecompressionBombError as err:
            raise _too_large(label, max_pixels, str(err)) from None
        except Exception as err:  # noqa: BLE001 -- untrusted bytes: any decoder failure is the upload's fault
            raise _undecodable(label, err) from None


def _too_large(label: str, max_pixels: int, what: str) -> APIError:
    return APIError(
        413, "image_too_large",
        f"{label} is too large ({what}); the limit is {max_pixels:,} pixels. Downscale it before uploading.",
    )


def _undecodable(label: str, err: BaseException) -> APIError:
    logger.debug("undecodable upload %s: %r", label, err)
    reason = "not a supported image, or corrupt" if isinstance(err, UnidentifiedImageError) else (
        str(err).strip() or type(err).__name__)
    return APIError(
        400, "undecodable_image",
        f"cannot decode {label}: {reason}. Upload a complete {SUPPORTED} file.",
    )
