"""PNG plots: training curves from a Hugging Face ``Trainer`` log, and metric bars across runs.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so plotting works on
headless machines, from threads, and without changing the user's global matplotlib backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distilvit.errors import DistilViTError
from distilvit.evaluation.metrics import CAPTION_METRIC_KEYS

__all__ = ["extract_curves", "plot_metric_bars", "plot_training_curves"]

_DPI = 110


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for missing / non-numeric / NaN values."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def extract_curves(
    log_history: Sequence[Mapping[str, Any]],
) -> dict[str, list[tuple[float, float]]]:
    """Collect ``(step, value)`` series from ``Trainer.state.log_history``.

    Returns a dict with ``"loss"`` (training loss logs), ``"eval_loss"`` and one ``"eval_<m>"``
    entry per caption metric ``m`` that was logged; series that were never logged are absent.
    Entries without a ``step`` use their position in the log.
    """
    if isinstance(log_history, (str, bytes, Mapping)) or not isinstance(log_history, Sequence):
        raise DistilViTError(
            "log_history must be a list of dicts (Trainer.state.log_history), "
            f"got {type(log_history).__name__}"
        )
    wanted = ["loss", "eval_loss"] + [f"eval_{k}" for k in CAPTION_METRIC_KEYS]
    curves: dict[str, list[tuple[float, float]]] = {}
    for index, entry in enumerate(log_history):
        if not isinstance(entry, Mapping):
            continue
        step = _number(entry.get("step"))
        step = float(index) if step is None else step
        for key in wanted:
            value = _number(entry.get(key))
            if value is not None:
                curves.setdefault(key, []).append((step, value))
    return curves


def _new_figure(ncols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _draw_series(ax, series: list[tuple[float, float]], label: str, **style) -> None:
    steps, values = zip(*sorted(series))
    marker = "o" if len(steps) < 30 else None
    ax.plot(steps, values, label=label, marker=marker, markersize=3, **style)


def _empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_losses(ax, curves: dict[str, list[tuple[float, float]]]) -> None:
    if "loss" not in curves and "eval_loss" not in curves:
        _empty_panel(ax, "no loss logged")
        return
    if "loss" in curves:
        _draw_series(ax, curves["loss"], "train loss", linewidth=1)
    if "eval_loss" in curves:
        _draw_series(ax, curves["eval_loss"], "eval loss", linewidth=2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()


def _draw_metrics(ax, curves: dict[str, list[tuple[float, float]]]) -> None:
    names = [k for k in CAPTION_METRIC_KEYS if f"eval_{k}" in curves]
    if not names:
        _empty_panel(ax, "no evaluation metrics logged")
        return
    # CIDEr lives on a 0-10 scale: give it its own axis when other (0-1) metrics are shown.
    cider_ax = ax.twinx() if "cider" in names and len(names) > 1 else ax
    handles = []
    for name in names:
        target = cider_ax if name == "cider" else ax
        style = {"linestyle": "--", "color": "black"} if target is not ax else {}
        _draw_series(target, curves[f"eval_{name}"], name, **style)
        handles.append(target.lines[-1])
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    if cider_ax is not ax:
        cider_ax.set_ylabel("cider")
    ax.set_title("evaluation metrics")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize="small")


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Plot training and eval loss (left) and eval caption metrics (right) against step.

    Args:
        log_history: ``Trainer.state.log_history``: training logs carry ``step`` and ``loss``,
            evaluation logs ``eval_loss``, ``eval_cider``, ``eval_bleu_4``, ... Either kind may be
            missing; other entries (``train_runtime``, learning rate, ...) are ignored.
        path: PNG file to write (parent folders are created).
        title: optional figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DistilViTError: the log holds no loss and no evaluation metric.
    """
    curves = extract_curves(log_history)
    if not curves:
        raise DistilViTError(
            "nothing to plot: the training log has no 'loss', 'eval_loss' or eval caption "
            "metric entries (was anything logged? check logging_steps / eval_strategy)"
        )
    fig, (loss_ax, metric_ax) = _new_figure(2, 12, 4.5)
    _draw_losses(loss_ax, curves)
    _draw_metrics(metric_ax, curves)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_bars(
    named_metrics: Mapping[str, Mapping[str, float]],
    path: str | Path,
    keys: Sequence[str] = ("cider", "bleu_4", "exact_match"),
    *,
    title: str | None = None,
) -> Path:
    """Grouped bar chart comparing runs: one group per metric in ``keys``, one bar per run.

    Args:
        named_metrics: run name (e.g. ``"model"``, ``"blind baseline"``) -> metrics dict.
        path: PNG file to write (parent folders are created).
        keys: metrics to show, in order; a metric a run lacks is left out of that group.
        title: optional chart title.

    Raises:
        DistilViTError: no runs, no keys, or none of ``keys`` present in any run.
    """
    if not isinstance(named_metrics, Mapping) or not named_metrics:
        raise DistilViTError("nothing to plot: named_metrics must map run names to metrics dicts")
    keys = [keys] if isinstance(keys, str) else list(keys)
    values = {
        run: [_number(m.get(k)) if isinstance(m, Mapping) else None for k in keys]
        for run, m in named_metrics.items()
    }
    if not keys or all(v is None for row in values.values() for v in row):
        raise DistilViTError(
            f"nothing to plot: none of the metrics {', '.join(map(str, keys)) or '(none)'} "
            f"is present in runs {', '.join(map(str, named_metrics))}"
        )
    fig, (ax,) = _new_figure(1, max(5.0, 1.6 * len(keys) * max(1, len(values)) ** 0.5 + 2), 4.5)
    width = 0.8 / len(values)
    for r, (run, row) in enumerate(values.items()):
        xs = [i + (r - (len(values) - 1) / 2) * width for i, v in enumerate(row) if v is not None]
        heights = [v for v in row if v is not None]
        bars = ax.bar(xs, heights, width=width * 0.95, label=str(run))
        ax.bar_label(bars, fmt="%.3f", fontsize="x-small", padding=2)
    ax.set_xticks(range(len(keys)), [str(k) for k in keys])
    ax.set_ylabel("score")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
