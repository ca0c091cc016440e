"""`score_captions` says which tokenizer ran and whether METEOR ran (recorded by `distilvit eval`)."""

from __future__ import annotations

import shutil

import pytest

import distilvit.evaluation.metrics as metrics_mod
import distilvit.evaluation.tokenize as tokenize_mod
from distilvit.evaluation.metrics import score_captions

PREDS = ["a dog runs on the grass", "a red square"]
REFS = [["a dog is running on grass", "a brown dog"], ["a small red square", "red square"]]
HAVE_JAVA = shutil.which("java") is not None


def _java(monkeypatch, present: bool):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: ("/usr/bin/java" if present else None)
                        if cmd == "java" else real_which(cmd, *a, **k))


@pytest.mark.skipif(not HAVE_JAVA, reason="needs Java (the PTB tokenizer)")
def test_with_java_the_ptb_tokenizer_runs_and_meteor_is_reported(monkeypatch):
    monkeypatch.setattr(metrics_mod, "meteor_score", lambda gts, res: 0.25)
    metrics, info = score_captions(PREDS, REFS)
    assert info == {"tokenizer": "ptb-java", "meteor": "ran"} and metrics["meteor"] == 0.25


def test_without_java_the_fallback_runs_and_meteor_is_skipped(monkeypatch):
    _java(monkeypatch, present=False)
    with pytest.warns(RuntimeWarning, match="Java was not found"):
        metrics, info = score_captions(PREDS, REFS)
    assert info == {"tokenizer": "python-fallback", "meteor": "skipped: Java not found"} and "meteor" not in metrics


def test_a_failing_ptb_tokenizer_is_reported_as_the_fallback(monkeypatch):
    _java(monkeypatch, present=True)

    def broken(captions):
        raise OSError("no JVM")

    monkeypatch.setattr(tokenize_mod, "_run_ptb", broken)
    with pytest.warns(RuntimeWarning, match="PTB tokenizer failed"):
        _, info = score_captions(PREDS, REFS, use_meteor=False)
    assert info == {"tokenizer": "python-fallback", "meteor": "not requested"}


def test_a_failing_meteor_is_reported(monkeypatch):
    _java(monkeypatch, present=True)
    monkeypatch.setattr(tokenize_mod, "_run_ptb", lambda captions: {k: list(v) for k, v in captions.items()})
    monkeypatch.setattr(metrics_mod, "meteor_score", lambda gts, res: None)
    metrics, info = score_captions(PREDS, REFS)
    assert info == {"tokenizer": "ptb-java", "meteor": "failed"} and "meteor" not in metrics
