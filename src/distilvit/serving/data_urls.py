"""Images sent inline as ``data:`` URLs (the OpenAI chat API's ``image_url`` parts), or the 4xx that says why not.

Only ``data:<image type>;base64,<bytes>`` is accepted. Any other URL (``http:``, ``https:``, ``file:``, ``ftp:``,
a bare path, ...) is refused before anything is done with it: the server never fetches, opens or resolves a URL.
The decoded bytes then pass the same checks as a multipart upload (:mod:`distilvit.serving.uploads`): content
type (``image/*``), pixel count from the header, allowed formats.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode

from distilvit.serving.limits import APIError
from distilvit.serving.uploads import GENERIC_TYPES, SUPPORTED, decode_image

_DATA_URL = re.compile(r"data:(?P<media>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)", re.DOTALL | re.IGNORECASE)

HOW = "send the image inline as data:image/png;base64,... (or image/jpeg, image/webp, ...)"


def _label(index: int) -> str:
    return f"image {index + 1}"


def data_url_bytes(url: str, index: int = 0) -> tuple[str, bytes]:
    """``(media type, bytes)`` of a base64 ``data:`` URL.

    Raises :class:`APIError` 400 ``image_url_not_allowed`` for any other kind of URL (never fetched) and 400
    ``invalid_data_url`` for a ``data:`` URL that is not base64 or whose payload is not valid base64.
    """
    text = url.strip()
    match = _DATA_URL.fullmatch(text) if text[:5].lower() == "data:" else None
    if match is None:
        if text[:5].lower() == "data:":
            raise APIError(400, "invalid_data_url", f"{_label(index)}: the data: URL is malformed (no ',' before "
                           f"the payload); {HOW}.")
        scheme = text.split(":", 1)[0].lower() if ":" in text[:12] else ""
        what = f"an {scheme!r} URL" if scheme else "not a data: URL"
        raise APIError(400, "image_url_not_allowed",
                       f"{_label(index)} is {what}; this server never fetches URLs (no http, https, file or any "
                       f"other scheme): {HOW}.")
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if "base64" not in params:
        raise APIError(400, "invalid_data_url", f"{_label(index)}: the data: URL is not base64-encoded; {HOW}.")
    payload = re.sub(r"\s+", "", match["payload"])
    try:
        data = b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "invalid_data_url", f"{_label(index)}: the data: URL's payload is not valid base64; "
                       f"{HOW}.") from None
    return match["media"].strip().lower(), data


def decode_data_url(url: str, *, max_pixels: int, index: int = 0):
    """The RGB PIL image of a base64 ``data:`` URL, checked like an upload (415, 400, 413 as in ``uploads``)."""
    media, data = data_url_bytes(url, index)
    if not (media.startswith("image/") or media in GENERIC_TYPES):
        raise APIError(415, "unsupported_media_type", f"{_label(index)} is a data: URL of type {media!r}, which is "
                       f"not an image; send {SUPPORTED} bytes as data:image/...;base64,...")
    return decode_image(data, max_pixels=max_pixels, index=index)
