"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) plus exact match.

Scores are computed with pycocoevalcap exactly as the official COCO caption evaluation does:
every caption is tokenized by the Stanford PTB tokenizer (lower-cased, punctuation removed), then
``Bleu(4)``, ``Meteor()``, ``Rouge()`` and ``Cider()`` score ``{image index: [prediction]}``
against ``{image index: references}``. Values are on pycocoevalcap's scale (BLEU, METEOR, ROUGE-L
and exact match in [0, 1]; CIDEr in [0, 10], usually below 2). CIDEr weights n-grams by how rare
they are across the references of the *whole* evaluated set, so it is only meaningful on a corpus
(on a single image it is always 0).

The PTB tokenizer and METEOR need Java. Without Java (``shutil.which("java")`` is None):

* captions are tokenized by :func:`~distilvit.evaluation.tokenize.fallback_tokenize`, a
  pure-Python approximation of the PTB tokenizer, with a warning;
* METEOR is skipped with a warning and the ``"meteor"`` key is **omitted** from the result (it is
  also omitted when ``use_meteor=False`` or when the METEOR process fails). Omitting it, rather
  than returning ``None``, keeps every returned value a float that can be logged, averaged and
  plotted; read it with ``metrics.get("meteor")``.

:func:`score_captions` also says which tokenizer ran and whether METEOR ran (``distilvit eval`` records both in
``metrics.json`` and the report).
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from distilvit.errors import DistilViTError
from distilvit.evaluation.meteor import meteor_score
from distilvit.evaluation.tokenize import tokenize_captions_named

__all__ = [
    "CAPTION_METRIC_KEYS",
    "compute_caption_metrics",
    "exact_match_flags",
    "is_exact_match",
    "normalize_for_match",
    "score_captions",
]

logger = logging.getLogger("distilvit.evaluation")

#: Every key :func:`compute_caption_metrics` can return, in report order.
CAPTION_METRIC_KEYS = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider",
    "exact_match",
)

_NO_JAVA = (
    "Java was not found on PATH: {what}. Install a Java runtime (for example "
    "`apt-get install default-jre-headless`) to get the official COCO scores."
)


def normalize_for_match(text: str) -> str:
    """Lower-case, collapse whitespace and strip one final period (the exact-match normal form)."""
    text = " ".join(text.lower().split())
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text


def is_exact_match(prediction: str, references: Sequence[str]) -> bool:
    """True if the normalised non-empty ``prediction`` equals at least one normalised reference."""
    pred = normalize_for_match(prediction)
    return bool(pred) and any(pred == normalize_for_match(ref) for ref in references)


def exact_match_flags(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[bool]:
    """Per-image :func:`is_exact_match` flags."""
    return [is_exact_match(p, refs) for p, refs in zip(predictions, references)]


def _is_str_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _validate(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    """Check shapes and types; return predictions and references with empty references dropped."""
    if not _is_str_list(predictions):
        raise DistilViTError(
            f"predictions must be a list of strings, got {type(predictions).__name__}"
        )
    if not _is_str_list(references):
        raise DistilViTError(
            f"references must be a list (one entry per image) of lists of strings, "
            f"got {type(references).__name__}"
        )
    if len(predictions) != len(references):
        raise DistilViTError(
            f"got {len(predictions)} predictions but {len(references)} reference lists: "
            "pass exactly one prediction and one list of references per image"
        )
    if not predictions:
        raise DistilViTError("nothing to evaluate: predictions and references are empty")
    preds: list[str] = []
    refs: list[list[str]] = []
    for i, (pred, ref_list) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise DistilViTError(f"predictions[{i}] must be a string, got {type(pred).__name__}")
        if not _is_str_list(ref_list) or not all(isinstance(r, str) for r in ref_list):
            raise DistilViTError(
                f"references[{i}] must be a list of strings (all reference captions of image "
                f"{i}), got {ref_list!r:.80}"
            )
        kept = [r for r in ref_list if r.strip()]
        if not kept:
            raise DistilViTError(
                f"references[{i}] has no non-empty reference caption; every image needs at "
                "least one"
            )
        preds.append(pred)
        refs.append(kept)
    return preds, refs


def _tokenize(
    predictions: list[str], references: list[list[str]], *, use_java: bool
) -> tuple[dict[int, list[str]], dict[int, list[str]], str]:
    """PTB-tokenize into COCO-style ``gts``/``res`` dicts keyed by image index (plus the tokenizer's name).

    References and predictions go through one tokenizer run (one JVM start instead of two); the
    PTB tokenizer works line by line, so the tokens are the same as with two runs.
    """
    combined: dict[tuple[str, int], list[str]] = {}
    for i, refs in enumerate(references):
        combined[("gts", i)] = refs
    for i, pred in enumerate(predictions):
        combined[("res", i)] = [pred]
    tokens, tokenizer = tokenize_captions_named(combined, use_java=use_java)
    gts = {i: tokens[("gts", i)] for i in range(len(references))}
    res = {i: tokens[("res", i)] for i in range(len(predictions))}
    return gts, res, tokenizer


def compute_caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    use_meteor: bool = True,
) -> dict[str, float]:
    """Score one predicted caption per image against that image's reference captions.

    Args:
        predictions: one caption per image; an empty caption is valid and scores 0.
        references: per image, a non-empty list of reference captions (empty strings are ignored).
        use_meteor: compute METEOR (starts a long-lived Java process on first use, about 5 s
            once per process). Pass ``False`` for quick in-training evaluation.

    Returns:
        ``bleu_1``, ``bleu_2``, ``bleu_3``, ``bleu_4``, ``meteor``, ``rouge_l``, ``cider`` and
        ``exact_match`` (fraction of predictions equal to a reference after lower-casing,
        whitespace normalisation and stripping a final period) as floats. ``meteor`` is omitted
        when ``use_meteor=False``, when Java is missing, or when METEOR fails (with a warning).

    Raises:
        DistilViTError: empty input, different numbers of predictions and reference lists, or a
            wrongly shaped entry.
    """
    return score_captions(predictions, references, use_meteor=use_meteor)[0]


def score_captions(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    use_meteor: bool = True,
) -> tuple[dict[str, float], dict[str, str]]:
    """:func:`compute_caption_metrics`, plus how the scores were computed: ``{"tokenizer": "ptb-java" or
    "python-fallback", "meteor": "ran", "not requested", "skipped: Java not found" or "failed"}``."""
    preds, refs = _validate(predictions, references)
    started = time.perf_counter()
    have_java = shutil.which("java") is not None
    if not have_java:
        warnings.warn(
            _NO_JAVA.format(
                what="captions are tokenized with a pure-Python approximation of the PTB "
                "tokenizer, so scores may differ slightly from the official COCO evaluation"
            ),
            RuntimeWarning,
            stacklevel=2,
        )
    gts, res, tokenizer = _tokenize(preds, refs, use_java=have_java)
    meteor_status = "not requested"

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    metrics: dict[str, float] = {f"bleu_{n}": float(bleu[n - 1]) for n in range(1, 5)}
    if use_meteor and not have_java:
        warnings.warn(
            _NO_JAVA.format(what="METEOR is skipped and the 'meteor' key is omitted"),
            RuntimeWarning,
            stacklevel=2,
        )
        meteor_status = "skipped: Java not found"
    elif use_meteor:
        meteor = meteor_score(gts, res)
        meteor_status = "failed" if meteor is None else "ran"
        if meteor is not None:
            metrics["meteor"] = meteor
    metrics["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    metrics["cider"] = float(Cider().compute_score(gts, res)[0])
    flags = exact_match_flags(preds, refs)
    metrics["exact_match"] = sum(flags) / len(flags)
    logger.debug(
        "caption metrics for %d images in %.2f s", len(preds), time.perf_counter() - started
    )
    return metrics, {"tokenizer": tokenizer, "meteor": meteor_status}
