"""Distribution measures of the quality report: entropy, Gini coefficient, Lorenz curve, top-k share, rarity;
caption length and vocabulary statistics. Pure functions of counts (no numpy needed, easy to check by hand)."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping

_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(caption: str) -> list[str]:
    """Lower-case word tokens of a caption (letters/digits, inner apostrophes and hyphens kept)."""
    return _TOKEN.findall(caption.lower())


def entropy_bits(counts: Iterable[int]) -> float:
    """Shannon entropy, in bits, of the distribution given by ``counts`` (zeros ignored)."""
    values = [c for c in counts if c > 0]
    total = sum(values)
    return -sum(c / total * math.log2(c / total) for c in values) if total else 0.0


def gini(counts: Iterable[int]) -> float:
    """Gini coefficient of ``counts`` (0: every class equally frequent; towards 1: one class dominates).

    ``G = sum_i (2i - n - 1) x_i / (n sum x)`` with the counts sorted ascending and ``i`` from 1.
    """
    values = sorted(counts)
    n, total = len(values), sum(values)
    if n == 0 or total == 0:
        return 0.0
    return sum((2 * i - n - 1) * x for i, x in enumerate(values, start=1)) / (n * total)


def lorenz(counts: Iterable[int]) -> list[tuple[float, float]]:
    """Points of the Lorenz curve: (share of classes, share of occurrences), classes from the rarest."""
    values = sorted(counts)
    n, total = len(values), sum(values)
    points, running = [(0.0, 0.0)], 0
    for i, x in enumerate(values, start=1):
        running += x
        points.append((i / n, running / total if total else 0.0))
    return points


def distribution_summary(counts: Mapping[str, int], *, top_k: int, rare_share: float) -> dict:
    """Entropy (bits and normalised), Gini, top-k share and the rare classes (share below ``rare_share``)."""
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    classes = len(ranked)
    entropy = entropy_bits(counts.values())
    rare = [{"class": name, "count": count, "share": count / total} for name, count in ranked
            if total and count / total < rare_share]
    return {
        "classes": classes, "occurrences": total,
        "entropy_bits": entropy,
        "normalised_entropy": entropy / math.log2(classes) if classes > 1 else 0.0,
        "gini": gini(counts.values()),
        "top_k": top_k,
        "top_k_share": sum(c for _, c in ranked[:top_k]) / total if total else 0.0,
        "rare_share_threshold": rare_share,
        "rare_classes": rare,
        "counts": dict(ranked),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (as numpy's default)."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def caption_statistics(captions: list[str], *, top_words: int = 50) -> dict:
    """Length (words and characters) and vocabulary statistics of ``captions``."""
    tokens = [words(c) for c in captions]
    lengths = sorted(len(t) for t in tokens)
    vocabulary = Counter(word for row in tokens for word in row)
    running = sum(vocabulary.values())
    return {
        "captions": len(captions),
        "words": {"mean": statistics.fmean(lengths) if lengths else 0.0, "median": _percentile(lengths, 0.5),
                  "p5": _percentile(lengths, 0.05), "p95": _percentile(lengths, 0.95),
                  "min": lengths[0] if lengths else 0, "max": lengths[-1] if lengths else 0},
        "characters_mean": statistics.fmean(len(c) for c in captions) if captions else 0.0,
        "length_histogram": dict(sorted(Counter(lengths).items())),
        "vocabulary_size": len(vocabulary),
        "tokens": running,
        "type_token_ratio": len(vocabulary) / running if running else 0.0,
        "words_used_once": sum(1 for c in vocabulary.values() if c == 1),
        "top_words": dict(vocabulary.most_common(top_words)),
    }


def duplicate_rates(image_hashes: list[str], captions: list[list[str]]) -> dict:
    """Rows whose image appeared before; captions identical (case/space-folded) to an earlier caption."""
    seen: set[str] = set()
    image_dups = 0
    for image_hash in image_hashes:
        image_dups += image_hash in seen
        seen.add(image_hash)
    seen_captions: set[str] = set()
    caption_dups = total = 0
    for row in captions:
        for caption in row:
            key = " ".join(words(caption))
            caption_dups += key in seen_captions
            seen_captions.add(key)
            total += 1
    return {"rows": len(image_hashes), "duplicate_images": image_dups,
            "duplicate_image_rate": image_dups / len(image_hashes) if image_hashes else 0.0,
            "captions": total, "duplicate_captions": caption_dups,
            "duplicate_caption_rate": caption_dups / total if total else 0.0}
