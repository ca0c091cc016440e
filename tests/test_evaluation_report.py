"""Tests for distilvit.evaluation.report."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from distilvit.errors import DistilViTError
from distilvit.evaluation.report import write_eval_outputs, write_predictions_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def _samples(n: int = 3) -> list[dict]:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    samples = [
        {
            "image": Image.new("RGB", (640, 480), colours[i % 3]),
            "image_id": f"img {i}/../x",
            "references": [f"a coloured square number {i}", "a square"],
            "prediction": f"a coloured square number {i}." if i % 2 == 0 else "a circle",
        }
        for i in range(n)
    ]
    if n >= 3:
        samples[1]["prediction"] = f"a {EVIL} square"
        samples[2]["references"].append(f"ref with {EVIL} & | pipes *stars*")
    return samples


def _html_image_refs(text: str) -> list[str]:
    return [unquote(src) for src in re.findall(r'<img src="([^"]+)"', text)]


def _md_image_refs(text: str) -> list[str]:
    return [unquote(src) for src in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)]


def test_both_formats_write_all_files(tmp_path):
    paths = write_eval_outputs(
        tmp_path / "out", {"cider": 1.25, "bleu_4": 0.3}, _samples(), title="run", fmt="both"
    )
    assert set(paths) == {"metrics", "html", "md", "images"}
    for key in ("metrics", "html", "md"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert paths["metrics"].name == "metrics.json"
    assert paths["html"].name == "report.html" and paths["md"].name == "report.md"
    assert len(list(paths["images"].glob("*.png"))) == 3


@pytest.mark.parametrize(("fmt", "expected"), [("html", {"html"}), ("md", {"md"})])
def test_single_format_writes_only_that_report(tmp_path, fmt, expected):
    paths = write_eval_outputs(tmp_path, {"cider": 1.0}, _samples(1), title="t", fmt=fmt)
    assert set(paths) - {"metrics", "images"} == expected
    other = {"html": "report.md", "md": "report.html"}[fmt]
    assert not (tmp_path / other).exists()


def test_metrics_json_is_sorted_pretty_and_holds_extra(tmp_path):
    metrics = {"cider": 1.5, "bleu_4": 0.25, "broken": math.nan}
    extra = {"model": tmp_path / "model", "dataset": "shapes", "num_images": 3, "seconds": 1.5}
    paths = write_eval_outputs(tmp_path, metrics, [], title="t", extra=extra)
    text = paths["metrics"].read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["metrics"] == {"cider": 1.5, "bleu_4": 0.25, "broken": None}
    assert data["info"] == {
        "model": str(tmp_path / "model"),
        "dataset": "shapes",
        "num_images": 3,
        "seconds": 1.5,
    }
    assert data["title"] == "t"
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_html_escapes_untrusted_text(tmp_path):
    samples = _samples()
    samples[0]["image_id"] = EVIL
    paths = write_eval_outputs(
        tmp_path, {"cider": 1.0}, samples, title=f"title {EVIL}", extra={"note": EVIL}
    )
    text = paths["html"].read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text
    assert text.count("&lt;script&gt;") >= 5  # title x2, id, prediction, reference, extra


def test_markdown_escapes_untrusted_text(tmp_path):
    paths = write_eval_outputs(tmp_path, {"cider": 1.0}, _samples(), title=EVIL, fmt="md")
    text = paths["md"].read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text
    assert r"\| pipes \*stars\*" in text


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_report_images_exist_and_are_relative(tmp_path, fmt):
    out = tmp_path / "report"
    paths = write_eval_outputs(out, {"cider": 1.0}, _samples(), title="t", fmt=fmt)
    text = paths[fmt].read_text(encoding="utf-8")
    refs = _html_image_refs(text) if fmt == "html" else _md_image_refs(text)
    assert len(refs) == 3
    # Copy the folder elsewhere: relative references must still resolve.
    copied = shutil.copytree(out, tmp_path / "copied")
    for ref in refs:
        assert not Path(ref).is_absolute() and ".." not in Path(ref).parts
        target = Path(copied) / ref
        assert target.is_file()
        assert target.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(target) as thumb:
            assert max(thumb.size) <= 256


def test_exact_match_marks(tmp_path):
    paths = write_eval_outputs(tmp_path, {}, _samples(), title="t", fmt="both")
    html_text = paths["html"].read_text(encoding="utf-8")
    md_text = paths["md"].read_text(encoding="utf-8")
    # samples 0 and 2 match a reference after normalisation, sample 1 does not
    assert html_text.count("exact match") == 2
    assert md_text.count("✓ exact match") == 2


def test_gallery_is_capped(tmp_path):
    paths = write_eval_outputs(tmp_path, {"cider": 1.0}, _samples(30), title="t")
    text = paths["html"].read_text(encoding="utf-8")
    assert len(_html_image_refs(text)) == 24
    assert len(list((tmp_path / "images").glob("*.png"))) == 24
    paths = write_eval_outputs(tmp_path / "small", {}, _samples(30), title="t", max_samples=2)
    assert len(_html_image_refs(paths["html"].read_text(encoding="utf-8"))) == 2


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "I;16", "CMYK", "1"])
def test_any_image_mode_becomes_a_png(tmp_path, mode):
    image = Image.new(mode, (300, 100))
    sample = {"image": image, "image_id": "a", "references": ["x"], "prediction": "y"}
    paths = write_eval_outputs(tmp_path, {}, [sample], title="t")
    (png,) = paths["images"].glob("*.png")
    with Image.open(png) as thumb:
        assert thumb.size == (256, 85)


def test_sample_without_image_is_listed_without_thumbnail(tmp_path):
    sample = {"image": None, "image_id": "a", "references": ["x"], "prediction": ""}
    paths = write_eval_outputs(tmp_path, {}, [sample], title="t")
    text = paths["html"].read_text(encoding="utf-8")
    assert "(no image)" in text and "(empty)" in text
    assert "images" not in paths


@pytest.mark.parametrize(
    ("kwargs", "samples", "message"),
    [
        ({"fmt": "pdf"}, [], "unknown report format"),
        ({}, [{"image": None, "image_id": "a", "prediction": "p"}], "lacks references"),
        ({}, [{"image": "x.png", "image_id": "a", "references": [], "prediction": ""}], "PIL"),
        ({}, [{"image": None, "image_id": "a", "references": "r", "prediction": ""}], "list of"),
        ({"max_samples": -1}, [], "max_samples"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, samples, message):
    with pytest.raises(DistilViTError, match=message):
        write_eval_outputs(tmp_path, {}, samples, title="t", **kwargs)


def test_predictions_jsonl(tmp_path):
    samples = _samples()
    samples[0]["prediction"] = "un café naïve"
    path = write_predictions_jsonl(tmp_path / "sub" / "predictions.jsonl", samples)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert all("image" not in r for r in records)
    assert records[0]["prediction"] == "un café naïve" and "café" in lines[0]
    assert records[1]["image_id"] == "img 1/../x"
    assert records[2]["references"] == samples[2]["references"]
    assert [r["exact_match"] for r in records] == [False, False, True]


def test_predictions_jsonl_rejects_non_samples(tmp_path):
    with pytest.raises(DistilViTError, match="prediction"):
        write_predictions_jsonl(tmp_path / "p.jsonl", [{"image_id": "a"}])
