"""open_image and the image check used to drop unreadable rows."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from distilvit.data import open_image
from distilvit.data.images import image_problem
from distilvit.errors import DataError


def test_open_image_from_path_bytes_dict_and_pil(tmp_path, image_bytes):
    data = image_bytes((10, 200, 30), "JPEG")
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    as_dicts = ({"bytes": data, "path": None}, {"bytes": None, "path": str(path)})
    for source in (path, str(path), data, *as_dicts):
        image = open_image(source)
        assert image.mode == "RGB"
        assert image.size == (16, 16)
        red, green, blue = image.getpixel((8, 8))
        assert green > 150 and red < 60 and blue < 80
    grey = Image.new("L", (4, 4), 128)
    assert open_image(grey).mode == "RGB"


def test_open_image_puts_transparency_on_white():
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG")
    assert open_image(buffer.getvalue()).getpixel((0, 0)) == (255, 255, 255)


def test_open_image_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(DataError, match=r"cannot read image .*nope\.png: file not found"):
        open_image(missing)


def test_open_image_corrupt_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.jpg: cannot identify image file"):
        open_image(bad)


def test_open_image_truncated_file(tmp_path, image_bytes):
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(image_bytes((1, 2, 3), "PNG", size=64)[:60])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.png"):
        open_image(truncated)


def test_open_image_rejects_too_many_pixels(image_bytes):
    data = image_bytes((0, 0, 0), "PNG", size=100)
    with pytest.raises(DataError, match=r"too large: 100x100 = 10,000 pixels"):
        open_image(data, max_pixels=9_999)
    assert open_image(data, max_pixels=10_000).size == (100, 100)


def test_image_problem_reports_reasons(tmp_path, image_bytes):
    assert image_problem(image_bytes((1, 2, 3), "JPEG")) is None
    assert image_problem(b"garbage").startswith("cannot identify image file")
    assert image_problem(str(tmp_path / "missing.png")) == "file not found"
    assert image_problem(None) == "no image in this row"
    assert "too large" in image_problem(image_bytes((1, 2, 3)), max_pixels=10)
