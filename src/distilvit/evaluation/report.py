"""Evaluation outputs: ``metrics.json``, an HTML and/or Markdown report, and predictions JSONL.

A report folder is self-contained: thumbnails are written as PNG files under ``images/`` and the
reports refer to them by relative paths, so the folder can be copied or zipped and still opens.
Captions, image ids and extra info are untrusted text and are always escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from distilvit.errors import DistilViTError
from distilvit.evaluation.metrics import CAPTION_METRIC_KEYS, is_exact_match

__all__ = ["write_eval_outputs", "write_predictions_jsonl"]

_FORMATS = ("html", "md", "both")
_SAMPLE_KEYS = ("image", "image_id", "references", "prediction")
_THUMB_SIZE = (256, 256)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#!|~])")

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table.metrics{border-collapse:collapse;margin-bottom:1.5em}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:.3em .8em;text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em;width:270px;font-size:.9em}
.card img{max-width:256px;max-height:256px;display:block;margin:auto}
.ok{color:#1a7f37;font-weight:bold}.no{color:#999}
ul{padding-left:1.2em;margin:.3em 0}
"""
_CSP = "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'"


def _jsonable(value: Any) -> Any:
    """``value`` in strict-JSON types (paths -> str, numpy scalars -> Python, NaN -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _check_samples(samples: Sequence[Mapping[str, Any]]) -> None:
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise DistilViTError(f"samples[{i}] must be a dict, got {type(sample).__name__}")
        missing = [k for k in _SAMPLE_KEYS if k not in sample]
        if missing:
            raise DistilViTError(
                f"samples[{i}] lacks {', '.join(missing)}; each sample needs "
                f"{', '.join(_SAMPLE_KEYS)}"
            )
        refs = sample["references"]
        if isinstance(refs, (str, bytes)) or not isinstance(refs, Sequence):
            raise DistilViTError(
                f"samples[{i}]['references'] must be a list of strings, got {type(refs).__name__}"
            )
        image = sample["image"]
        if image is not None and not isinstance(image, Image.Image):
            raise DistilViTError(
                f"samples[{i}]['image'] must be a PIL.Image or None, got {type(image).__name__}"
            )


def _safe_stem(index: int, image_id: Any) -> str:
    """A file-name-safe, unique stem for the thumbnail of sample ``index``."""
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "_", str(image_id)).strip("_-")[:60]
    return f"{index:04d}_{cleaned}" if cleaned else f"{index:04d}"


def _save_thumbnail(image: Image.Image, path: Path) -> None:
    thumb = image.copy()
    if thumb.mode not in ("RGB", "RGBA", "L", "LA"):
        thumb = thumb.convert("RGBA" if "A" in thumb.getbands() else "RGB")
    thumb.thumbnail(_THUMB_SIZE)
    thumb.save(path, format="PNG")


def _write_thumbnails(out_dir: Path, samples: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """Save one PNG per sample under ``out_dir/images``; return paths relative to ``out_dir``."""
    rel_paths: list[str | None] = []
    image_dir = out_dir / "images"
    for i, sample in enumerate(samples):
        if sample["image"] is None:
            rel_paths.append(None)
            continue
        image_dir.mkdir(parents=True, exist_ok=True)
        name = _safe_stem(i, sample["image_id"]) + ".png"
        _save_thumbnail(sample["image"], image_dir / name)
        rel_paths.append(f"images/{name}")
    return rel_paths


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(value)


def _ordered_metrics(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Known caption metrics first in their usual order, then any other keys alphabetically."""
    known = [(k, metrics[k]) for k in CAPTION_METRIC_KEYS if k in metrics]
    rest = sorted((str(k), v) for k, v in metrics.items() if k not in CAPTION_METRIC_KEYS)
    return known + rest


# --------------------------------------------------------------------------------------- HTML
def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(rows: list[tuple[str, Any]], headers: tuple[str, str]) -> str:
    body = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_fmt_value(v))}</td></tr>" for k, v in rows)
    return (
        f'<table class="metrics"><tr><th>{_esc(headers[0])}</th><th>{_esc(headers[1])}</th></tr>'
        f"{body}</table>"
    )


def _html_card(sample: Mapping[str, Any], rel_path: str | None) -> str:
    matched = is_exact_match(str(sample["prediction"]), [str(r) for r in sample["references"]])
    mark = (
        '<span class="ok">&#10003; exact match</span>'
        if matched
        else '<span class="no">&#10007;</span>'
    )
    image = (
        f'<img src="{_esc(quote(rel_path))}" alt="{_esc(sample["image_id"])}" loading="lazy">'
        if rel_path
        else "<em>(no image)</em>"
    )
    refs = "".join(f"<li>{_esc(r)}</li>" for r in sample["references"])
    return (
        f'<div class="card">{image}<div><b>id:</b> {_esc(sample["image_id"])}</div>'
        f"<div><b>prediction:</b> {_esc(sample['prediction']) or '<em>(empty)</em>'} {mark}</div>"
        f"<div><b>references:</b><ul>{refs}</ul></div></div>"
    )


def _render_html(
    title: str,
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]],
    rel_paths: list[str | None],
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        "<h2>Metrics</h2>",
        _html_table(_ordered_metrics(metrics), ("metric", "value")),
    ]
    if extra:
        run_rows = sorted((str(k), v) for k, v in extra.items())
        parts += ["<h2>Run</h2>", _html_table(run_rows, ("key", "value"))]
    if samples:
        parts.append(f"<h2>Samples ({len(samples)})</h2><div class=\"gallery\">")
        parts += [_html_card(s, p) for s, p in zip(samples, rel_paths)]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------- Markdown
def _md_esc(text: Any) -> str:
    """Escape untrusted text for Markdown: HTML-escape, backslash-escape markup, one line."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def _md_table(rows: list[tuple[str, Any]], headers: tuple[str, str]) -> list[str]:
    lines = [f"| {headers[0]} | {headers[1]} |", "|---|---|"]
    lines += [f"| {_md_esc(k)} | {_md_esc(_fmt_value(v))} |" for k, v in rows]
    return lines


def _render_md(
    title: str,
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]],
    rel_paths: list[str | None],
) -> str:
    lines = [f"# {_md_esc(title)}", "", "## Metrics", ""]
    lines += _md_table(_ordered_metrics(metrics), ("metric", "value"))
    if extra:
        lines += ["", "## Run", ""]
        lines += _md_table(sorted((str(k), v) for k, v in extra.items()), ("key", "value"))
    if samples:
        lines += ["", f"## Samples ({len(samples)})"]
    for sample, rel_path in zip(samples, rel_paths):
        matched = is_exact_match(str(sample["prediction"]), [str(r) for r in sample["references"]])
        lines += ["", f"### {_md_esc(sample['image_id'])}", ""]
        if rel_path:
            lines += [f"![{_md_esc(sample['image_id'])}]({quote(rel_path)})", ""]
        lines.append(
            f"**prediction:** {_md_esc(sample['prediction']) or '*(empty)*'} "
            + ("✓ exact match" if matched else "✗")
        )
        lines += ["", "**references:**", ""]
        lines += [f"- {_md_esc(r)}" for r in sample["references"]]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- public API
def write_eval_outputs(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    samples: Sequence[Mapping[str, Any]],
    *,
    title: str,
    fmt: str = "html",
    extra: Mapping[str, Any] | None = None,
    max_samples: int = 24,
) -> dict[str, Path]:
    """Write ``metrics.json`` and an HTML and/or Markdown report into ``out_dir``.

    Args:
        out_dir: output folder (created if needed; files of the same name are overwritten).
        metrics: metric name -> value, typically from :func:`compute_caption_metrics`.
        samples: dicts with ``image`` (``PIL.Image`` or ``None``), ``image_id``, ``references``
            (list of str) and ``prediction`` (str); the first ``max_samples`` go in the gallery.
        title: report title.
        fmt: ``"html"``, ``"md"`` or ``"both"``.
        extra: run information stored in ``metrics.json`` and shown in the report (model path,
            dataset, number of images, timing, ...).
        max_samples: gallery size (thumbnails are saved as ``out_dir/images/NNNN_<id>.png``).

    Returns:
        ``{"metrics": .../metrics.json}`` plus ``"html"`` and/or ``"md"`` report paths, and
        ``"images"`` (the thumbnail folder) when at least one thumbnail was written.

    ``metrics.json`` holds ``{"title": ..., "metrics": {...}, "info": {...extra}}``,
    pretty-printed with sorted keys; non-finite numbers are written as ``null``.
    """
    if fmt not in _FORMATS:
        raise DistilViTError(f"unknown report format {fmt!r}; use one of {', '.join(_FORMATS)}")
    if max_samples < 0:
        raise DistilViTError(f"max_samples must be >= 0, got {max_samples}")
    shown = list(samples)[:max_samples]
    _check_samples(shown)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})

    paths: dict[str, Path] = {"metrics": out / "metrics.json"}
    payload = {"title": title, "metrics": _jsonable(dict(metrics)), "info": _jsonable(extra)}
    paths["metrics"].write_text(
        json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    rel_paths = _write_thumbnails(out, shown)
    if any(rel_paths):
        paths["images"] = out / "images"
    if fmt in ("html", "both"):
        paths["html"] = out / "report.html"
        paths["html"].write_text(
            _render_html(title, metrics, extra, shown, rel_paths), encoding="utf-8"
        )
    if fmt in ("md", "both"):
        paths["md"] = out / "report.md"
        paths["md"].write_text(
            _render_md(title, metrics, extra, shown, rel_paths), encoding="utf-8"
        )
    return paths


def write_predictions_jsonl(path: str | Path, samples: Sequence[Mapping[str, Any]]) -> Path:
    """Write one JSON object per sample (every key but ``image``, plus ``exact_match``).

    Lines look like ``{"image_id": ..., "prediction": ..., "references": [...],
    "exact_match": false}`` (UTF-8, keys sorted). Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i, sample in enumerate(samples):
            if not isinstance(sample, Mapping) or "prediction" not in sample:
                raise DistilViTError(f"samples[{i}] must be a dict with at least a 'prediction'")
            record = {k: v for k, v in sample.items() if k != "image"}
            record["exact_match"] = is_exact_match(
                str(sample["prediction"]), [str(r) for r in sample.get("references", [])]
            )
            handle.write(
                json.dumps(_jsonable(record), sort_keys=True, ensure_ascii=False, allow_nan=False)
                + "\n"
            )
    return path
