"""Evaluation: COCO caption metrics (pycocoevalcap), reports (HTML/Markdown) and plots.

>>> from distilvit.evaluation import compute_caption_metrics
>>> compute_caption_metrics(["a dog runs"], [["a dog is running", "a brown dog"]], use_meteor=False)
... # doctest: +SKIP
"""

from distilvit.evaluation.meteor import close_meteor
from distilvit.evaluation.metrics import (
    CAPTION_METRIC_KEYS,
    compute_caption_metrics,
    exact_match_flags,
    is_exact_match,
    normalize_for_match,
)
from distilvit.evaluation.plots import plot_metric_bars, plot_training_curves
from distilvit.evaluation.report import write_eval_outputs, write_predictions_jsonl
from distilvit.evaluation.tokenize import fallback_tokenize

__all__ = [
    "CAPTION_METRIC_KEYS",
    "close_meteor",
    "compute_caption_metrics",
    "exact_match_flags",
    "fallback_tokenize",
    "is_exact_match",
    "normalize_for_match",
    "plot_metric_bars",
    "plot_training_curves",
    "write_eval_outputs",
    "write_predictions_jsonl",
]
