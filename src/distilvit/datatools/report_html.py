"""The HTML page of ``distilvit data report``: summary tables, plots (matplotlib PNGs in ``plots/``) and
thumbnails of the worst examples (``thumbs/``), all referenced by relative paths."""

from __future__ import annotations

import html
import io
from pathlib import Path

THUMB_SIZE = 160


def _plots(folder: Path, report: dict) -> list[tuple[str, str]]:
    """Write the plots; ``(file name relative to the page, title)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "plots").mkdir()
    made = []

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / "plots" / name, dpi=100)
        plt.close(fig)
        made.append((f"plots/{name}", title))

    histogram = report["captions"]["length_histogram"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([int(k) for k in histogram], list(histogram.values()), width=0.9, color="#4c72b0")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="caption length (words)", ylabel="captions", title="Caption length")
    save(fig, "length_histogram.png", "Caption length histogram")

    objects = report["objects"]
    points = objects["lorenz"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=f"objects (Gini {objects['gini']:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect balance")
    ax.set(xlabel="share of classes (rarest first)", ylabel="share of occurrences", title="Lorenz curve")
    ax.legend(fontsize="small")
    save(fig, "lorenz.png", "Lorenz curve of the object classes")

    counts = sorted(objects["counts"].values(), reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if counts:
        ax.loglog(range(1, len(counts) + 1), counts, marker=".", linestyle="-")
    ax.set(xlabel="rank", ylabel="images", title="Rank-frequency of object classes")
    save(fig, "rank_frequency.png", "Rank-frequency of the object classes")
    return made


def _thumbs(folder: Path, report: dict, images: list) -> dict[int, str]:
    from PIL import Image

    (folder / "thumbs").mkdir()
    paths = {}
    for row in report["worst"]:
        index = row["index"]
        try:
            image = Image.open(io.BytesIO(images[index]["bytes"])).convert("RGB")
        except Exception:  # an image the loader accepted but PIL cannot thumbnail: leave it out
            continue
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        name = f"thumbs/{index}.png"
        image.save(folder / name)
        paths[index] = name
    return paths


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def write_html(folder: Path, report: dict, images: list) -> Path:
    """Write ``report.html`` (and its plots and thumbnails) into ``folder``."""
    plots = _plots(folder, report)
    thumbs = _thumbs(folder, report, images)
    text, dups, objects = report["captions"], report["duplicates"], report["objects"]
    summary = _table(["measure", "value"], [[k, _fmt(v)] for k, v in [
        ("images", report["images"]), ("captions", text["captions"]),
        ("mean words per caption", text["words"]["mean"]), ("median words", text["words"]["median"]),
        ("vocabulary size", text["vocabulary_size"]), ("type-token ratio", text["type_token_ratio"]),
        ("duplicate images", dups["duplicate_images"]), ("duplicate image rate", dups["duplicate_image_rate"]),
        ("duplicate caption rate", dups["duplicate_caption_rate"]),
        ("object classes", objects["classes"]), ("objects from", objects["method"]),
        ("entropy (bits)", objects["entropy_bits"]), ("normalised entropy", objects["normalised_entropy"]),
        ("Gini", objects["gini"]), (f"top-{objects['top_k']} share", objects["top_k_share"]),
        (f"rare classes (share < {objects['rare_share_threshold']})", len(objects["rare_classes"])),
        *[(f"{name} (mean)", values["mean"]) for name, values in report["alignment"].items()],
    ]])
    terms = _table(["category", "before de-biasing", "after"],
                   [[html.escape(c), v["before"], v["after"]] for c, v in report["protected_terms"]["by_category"].items()])
    rare = _table(["class", "images", "share"], [[html.escape(r["class"]), r["count"], _fmt(r["share"])]
                                                 for r in objects["rare_classes"]])
    score_names = list(report["alignment"])
    worst = _table(["rank", "image", "caption", "split", "source", "problems", *score_names], [
        [row["rank"], f'<img src="{thumbs[row["index"]]}" alt="example {row["index"]}">' if row["index"] in thumbs
         else "", html.escape(row["caption"]), html.escape(row["split"]), html.escape(row["source"]), row["problems"],
         *[_fmt(row[name]) for name in score_names]] for row in report["worst"]])
    figures = "".join(f'<figure><img src="{src}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}'
                      "</figcaption></figure>" for src, title in plots)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>distilvit data report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}figure{{display:inline-block;margin:1em}}
</style></head><body>
<h1>Dataset report</h1>
<p>Datasets: {html.escape(", ".join(map(str, report["datasets"])))}</p>
<h2>Summary</h2>{summary}
<h2>Plots</h2>{figures}
<h2>Protected-attribute terms</h2>{terms}
<h2>Rare object classes</h2>{rare}
<h2>Worst examples (ranked by {html.escape(report["worst_ranked_by"])})</h2>{worst}
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
