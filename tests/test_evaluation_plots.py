"""Tests for distilvit.evaluation.plots."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from distilvit.errors import DistilViTError
from distilvit.evaluation.plots import extract_curves, plot_metric_bars, plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _train_logs(n: int = 20) -> list[dict]:
    return [
        {
            "loss": 3.0 - 0.1 * i,
            "grad_norm": 1.0,
            "learning_rate": 1e-4,
            "epoch": i / n,
            "step": 10 * (i + 1),
        }
        for i in range(n)
    ]


def _eval_logs(n: int = 4) -> list[dict]:
    return [
        {
            "eval_loss": 2.5 - 0.2 * i,
            "eval_cider": 0.2 * i,
            "eval_bleu_4": 0.05 * i,
            "eval_exact_match": 0.01 * i,
            "eval_runtime": 1.2,
            "epoch": i / n,
            "step": 50 * (i + 1),
        }
        for i in range(n)
    ]


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    with Image.open(path) as image:
        image.verify()


def test_training_curves_with_train_and_eval(tmp_path):
    logs = _train_logs() + _eval_logs() + [{"train_loss": 2.0, "train_runtime": 9.0, "step": 200}]
    path = plot_training_curves(logs, tmp_path / "plots" / "curves.png", title="run")
    assert path == tmp_path / "plots" / "curves.png"
    _assert_png(path, min_bytes=20_000)
    with Image.open(path) as image:
        assert image.size[0] > image.size[1]  # two panels side by side


@pytest.mark.parametrize("logs", [_train_logs(), _eval_logs(), _train_logs(3)[:1]])
def test_training_curves_with_partial_logs(tmp_path, logs):
    _assert_png(plot_training_curves(logs, tmp_path / "c.png"))


def test_extract_curves_reads_trainer_logs():
    logs = _train_logs(3) + _eval_logs(2) + [{"loss": math.nan, "step": 999}, "junk", {"loss": 1.0}]
    curves = extract_curves(logs)
    assert curves["loss"] == [(10.0, 3.0), (20.0, 2.9), (30.0, 2.8), (7.0, 1.0)]
    assert curves["eval_loss"] == [(50.0, 2.5), (100.0, 2.3)]
    assert curves["eval_cider"] == [(50.0, 0.0), (100.0, 0.2)]
    assert set(curves) == {"loss", "eval_loss", "eval_cider", "eval_bleu_4", "eval_exact_match"}


@pytest.mark.parametrize(
    "logs",
    [[], [{"train_runtime": 1.0, "step": 5}], [{"loss": None, "step": 1}, {"eval_runtime": 2.0}]],
)
def test_nothing_to_plot_raises(tmp_path, logs):
    with pytest.raises(DistilViTError, match="nothing to plot"):
        plot_training_curves(logs, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_log_history_must_be_a_list(tmp_path):
    with pytest.raises(DistilViTError, match="list of dicts"):
        plot_training_curves({"loss": 1.0}, tmp_path / "c.png")


def test_metric_bars(tmp_path):
    runs = {
        "model": {"cider": 0.9, "bleu_4": 0.2, "exact_match": 0.1, "meteor": 0.3},
        "blind baseline": {"cider": 0.1, "bleu_4": 0.05},
    }
    path = plot_metric_bars(runs, tmp_path / "bars.png", title="model vs baseline")
    _assert_png(path)
    path = plot_metric_bars(runs, tmp_path / "bars_meteor.png", keys=("meteor",))
    _assert_png(path)


@pytest.mark.parametrize(
    ("runs", "keys"),
    [({}, ("cider",)), ({"a": {"bleu_1": 0.5}}, ("cider", "bleu_4")), ({"a": {"cider": 1.0}}, ())],
)
def test_metric_bars_nothing_to_plot(tmp_path, runs, keys):
    with pytest.raises(DistilViTError, match="nothing to plot"):
        plot_metric_bars(runs, tmp_path / "bars.png", keys=keys)

