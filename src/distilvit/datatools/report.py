"""``distilvit data report``: caption quality, duplicates, protected-attribute terms, object balance, alignment.

Files written to ``--out``:

* ``report.json``: every statistic (captions, duplicates, protected terms before/after de-biasing by
  category and term, the object distribution with entropy, Gini, top-k share and rare classes, the
  co-occurring classes of each rare class, alignment summaries, the worst examples);
* ``examples.csv``: one row per image with its scores and rank (0 = worst); ``objects.csv``;
  ``protected_terms.csv``;
* ``report.html`` with ``plots/*.png`` and ``thumbs/*.png`` (:mod:`distilvit.datatools.report_html`).

Worst examples: with ``--model`` and/or ``--clip-model``, images are ranked by their alignment scores (the
mean of their ranks under each score, lowest score = worst). Without either, by a count of problems:
protected-attribute terms, a duplicate image, duplicate captions, and a caption length outside the 5th-95th
percentile.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from distilvit.datatools.objects import image_objects
from distilvit.datatools.rules import Rules
from distilvit.datatools.stats import caption_statistics, distribution_summary, duplicate_rates, lorenz, words
from distilvit.datatools.table import read_table
from distilvit.datatools.writer import check_out_dir, publish, staging_dir
from distilvit.errors import DataError

logger = logging.getLogger("distilvit.datatools")
COOCCURRING = 5


class LazyImages:
    """The encoded images of a table, read from its Arrow data only when asked for (by index or slice)."""

    def __init__(self, table):
        self._arrow = table.select_columns(["image"]).with_format("arrow")

    def __len__(self) -> int:
        return len(self._arrow)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._arrow[key]["image"].to_pylist()
        return self._arrow[key:key + 1]["image"].to_pylist()[0]


def protected_terms(rules: Rules, captions: list[list[str]]) -> dict:
    """Protected-attribute terms by category and term, before and after the de-bias rewrite."""
    before: Counter = Counter()
    after: Counter = Counter()
    for row in tqdm(captions, desc="protected terms", unit="image"):
        for caption in row:
            before.update(rules.find_terms(caption))
            after.update(rules.find_terms(rules.rewrite(caption).text))
    categories = rules.categories()
    by_category = {cat: {"before": sum(n for (c, _), n in before.items() if c == cat),
                         "after": sum(n for (c, _), n in after.items() if c == cat)} for cat in categories}
    terms = [{"category": cat, "term": term, "before": before[(cat, term)], "after": after[(cat, term)]}
             for cat, term in sorted(set(before) | set(after))]
    return {"by_category": by_category, "terms": terms}


def _cooccurrence(objects: list[list[str]], rare: list[str]) -> dict[str, list[list]]:
    wanted = set(rare)
    pairs: dict[str, Counter] = {name: Counter() for name in rare}
    for row in objects:
        for name in wanted.intersection(row):
            pairs[name].update(other for other in row if other != name)
    return {name: [[other, n] for other, n in counter.most_common(COOCCURRING)] for name, counter in pairs.items()}


def _ranks(values: list[float]) -> list[float]:
    """Rank of each value, 0 for the lowest (NaN counts as lowest)."""
    order = sorted(range(len(values)), key=lambda i: (not math.isnan(values[i]), values[i]))
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


def build_report(specs: list[str], *, rules_file: str | None = None, model: str | None = None,
                 clip_model: str | None = None, top_k: int = 10, rare_share: float = 0.01, worst: int = 20,
                 sample: int | None = None, seed: int = 42, batch_size: int = 16) -> tuple[dict, list[dict], list]:
    """The report dict, the per-example rows, and the encoded images (for the thumbnails)."""
    if not 0 < rare_share < 1:
        raise DataError(f"--rare-threshold must be between 0 and 1 (a share of the object occurrences), got {rare_share}")
    rules = Rules.load(rules_file)
    table = read_table(specs, seed=seed, sample=sample)
    captions = table["alt_text"]
    hashes = table["image_hash"]
    labels = table["objects"] if "objects" in table.column_names else [None] * len(table)
    objects = [image_objects(row, label) for row, label in tqdm(zip(captions, labels), total=len(table),
                                                                desc="objects", unit="image")]
    method = ("objects column" if all(v is not None for v in labels) else
              "caption nouns (lemminflect lexicon)" if all(v is None for v in labels) else "mixed")
    flat = [c for row in captions for c in row]
    text = caption_statistics(flat)
    distribution = distribution_summary(Counter(o for row in objects for o in row), top_k=top_k, rare_share=rare_share)
    distribution["method"] = method
    distribution["lorenz"] = lorenz(distribution["counts"].values())
    distribution["cooccurring_with_rare"] = _cooccurrence(objects, [r["class"] for r in distribution["rare_classes"]])
    images = LazyImages(table)
    scores: dict[str, list[float]] = {}
    if model:
        from distilvit.datatools.alignment import caption_log_likelihood

        scores["caption_log_likelihood"] = caption_log_likelihood(model, images, captions, batch_size=batch_size)
    if clip_model:
        from distilvit.datatools.alignment import clip_similarity

        scores["clip_similarity"] = clip_similarity(clip_model, images, captions, batch_size=batch_size)
    rows = _example_rows(table, captions, objects, rules, scores, text)
    ranked = sorted(range(len(rows)), key=lambda i: rows[i]["rank"])
    report = {
        "datasets": specs, "images": len(table), "rules": rules_file or "default",
        "captions": text, "duplicates": duplicate_rates(hashes, captions),
        "protected_terms": protected_terms(rules, captions), "objects": distribution,
        "alignment": {name: _summary(values) | {"model": model if name.startswith("caption") else clip_model}
                      for name, values in scores.items()},
        "worst_ranked_by": " + ".join(scores) if scores else "problem count",
        "worst": [rows[i] for i in ranked[:worst]],
    }
    return report, rows, images


def _summary(values: list[float]) -> dict:
    finite = sorted(v for v in values if not math.isnan(v))
    if not finite:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(finite) / len(finite), "min": finite[0], "max": finite[-1], "median": finite[len(finite) // 2]}


def _example_rows(table, captions, objects, rules: Rules, scores: dict, text: dict) -> list[dict]:
    low, high = text["words"]["p5"], text["words"]["p95"]
    seen_images: set[str] = set()
    caption_counts = Counter(" ".join(words(c)) for row in captions for c in row)
    rows = []
    columns = zip(table["split"], table["source"], table["source_id"], table["image_hash"])
    for i, (split, source, source_id, image_hash) in enumerate(tqdm(columns, total=len(table), desc="examples",
                                                                    unit="image")):
        row_captions = captions[i]
        lengths = [len(words(c)) for c in row_captions]
        terms = sum(sum(rules.find_terms(c).values()) for c in row_captions)
        duplicate = image_hash in seen_images
        seen_images.add(image_hash)
        repeated = sum(caption_counts[" ".join(words(c))] > 1 for c in row_captions)
        outliers = sum(not low <= n <= high for n in lengths)
        row = {"index": i, "split": split, "source": source, "source_id": source_id, "caption": row_captions[0],
               "captions": len(row_captions), "mean_words": sum(lengths) / len(lengths) if lengths else 0,
               "objects": " ".join(objects[i]), "protected_terms": terms, "duplicate_image": duplicate,
               "duplicate_captions": repeated, "length_outliers": outliers,
               "problems": terms + int(duplicate) + repeated + outliers}
        for name, values in scores.items():
            row[name] = values[i]
        rows.append(row)
    if scores:
        per_score = [_ranks(values) for values in scores.values()]
        combined = [sum(r[i] for r in per_score) / len(per_score) for i in range(len(rows))]
    else:
        combined = [-row["problems"] for row in rows]
    order = sorted(range(len(rows)), key=lambda i: (combined[i], i))
    for rank, i in enumerate(order):
        rows[i]["rank"] = rank
    return rows


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def report_job(specs: list[str], out: str | Path, *, overwrite: bool = False, **options) -> str:
    """Build the report and write it to ``out``; returns the summary to print."""
    from distilvit.datatools.report_html import write_html

    target = check_out_dir(out, overwrite=overwrite)
    report, rows, images = build_report(specs, **options)
    staging = staging_dir(target)
    try:
        (staging / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        (staging / "examples.csv").write_text(_csv(rows))
        distribution = report["objects"]
        rare = {r["class"] for r in distribution["rare_classes"]}
        total = distribution["occurrences"] or 1
        (staging / "objects.csv").write_text(_csv([{"class": k, "images": v, "share": v / total, "rare": k in rare}
                                                   for k, v in distribution["counts"].items()]))
        (staging / "protected_terms.csv").write_text(_csv(report["protected_terms"]["terms"]))
        write_html(staging, report, images)
        publish(staging, target)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    d = report["objects"]
    return (f"{report['images']} images, {report['captions']['captions']} captions; "
            f"{report['duplicates']['duplicate_images']} duplicate images; {d['classes']} object classes "
            f"({d['method']}): entropy {d['entropy_bits']:.3f} bits, Gini {d['gini']:.3f}, "
            f"{len(d['rare_classes'])} rare\nwrote {target / 'report.html'}")
