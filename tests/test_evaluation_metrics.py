"""Tests for distilvit.evaluation.metrics and the METEOR singleton."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import pytest
from java import HAVE_JAVA, needs_java
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from distilvit.errors import DistilViTError
from distilvit.evaluation import meteor as meteor_mod
from distilvit.evaluation import metrics as metrics_mod
from distilvit.evaluation.metrics import (
    CAPTION_METRIC_KEYS,
    compute_caption_metrics,
    exact_match_flags,
    is_exact_match,
    normalize_for_match,
)


REFERENCES = [
    ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean."],
    ["Two giraffes standing next to each other in a field.", "A pair of giraffes in the grass!"],
    ["A plate of food with broccoli, rice and meat.", "Dinner plate with rice, meat & vegetables"],
    ["A red double-decker bus driving down a street.", "A bus on a city street", "Red bus."],
    ["A cat sitting on a laptop keyboard.", "The cat's lying on the computer."],
]

CAPTION_SETS = {
    "close": (
        [
            "a man riding a wave on a surfboard",
            "two giraffes standing in a field.",
            "A plate of rice and broccoli",
            "a red bus driving down the street",
            "a cat on a laptop keyboard",
        ],
        REFERENCES,
    ),
    "mixed": (
        [
            "A surfer rides a large wave in the ocean.",
            "",
            "a dog running on the beach",
            "Red bus",
            "The cat's lying on the computer",
        ],
        REFERENCES,
    ),
    "small": (
        ["a black dog runs (fast) on grass", "a woman holds an umbrella in the rain", "two kids"],
        [
            ["A black dog running across the grass.", "a dog runs on a lawn"],
            ["A woman with an umbrella walks in the rain", "Person holding umbrella."],
            ["Two children playing soccer.", "Kids play football in a park", "two kids"],
        ],
    ),
}

UNRELATED = [
    "a bowl of soup on a wooden table",
    "an airplane parked at the airport",
    "a snowy mountain under a blue sky",
    "a man playing a guitar on stage",
    "a clock tower in a city square",
]


@pytest.fixture(scope="module")
def direct_meteor():
    """A pycocoevalcap ``Meteor`` for the reference computation.

    Starting a METEOR JVM costs 5-10 s on a small machine, so the test reuses the process-wide
    instance: it is a plain ``pycocoevalcap.meteor.meteor.Meteor`` that the test calls directly.
    """
    scorer = meteor_mod.get_meteor()
    assert type(scorer) is Meteor
    return scorer


def _pycocoevalcap_scores(predictions, references, meteor_scorer):
    """The official COCO caption evaluation recipe, written out with pycocoevalcap directly."""
    gts = {i: [{"caption": c} for c in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": p}] for i, p in enumerate(predictions)}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {
        "bleu_1": bleu[0],
        "bleu_2": bleu[1],
        "bleu_3": bleu[2],
        "bleu_4": bleu[3],
        "meteor": meteor_scorer.compute_score(gts, res)[0],
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }


@needs_java
@pytest.mark.parametrize("name", sorted(CAPTION_SETS))
def test_metrics_equal_pycocoevalcap(name, direct_meteor):
    predictions, references = CAPTION_SETS[name]
    ours = compute_caption_metrics(predictions, references)
    expected = _pycocoevalcap_scores(predictions, references, direct_meteor)
    assert set(ours) == set(CAPTION_METRIC_KEYS)
    assert all(type(v) is float for v in ours.values())
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_perfect_predictions_score_high():
    predictions = [refs[0] for refs in REFERENCES]
    scores = compute_caption_metrics(predictions, REFERENCES, use_meteor=HAVE_JAVA)
    assert scores["exact_match"] == 1.0
    assert scores["bleu_1"] > 0.99 and scores["bleu_4"] > 0.99
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["cider"] > 3.0
    if HAVE_JAVA:
        assert scores["meteor"] > 0.9


def test_unrelated_predictions_score_lower():
    perfect = compute_caption_metrics([r[0] for r in REFERENCES], REFERENCES, use_meteor=HAVE_JAVA)
    unrelated = compute_caption_metrics(UNRELATED, REFERENCES, use_meteor=HAVE_JAVA)
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider", "exact_match") + (
        ("meteor",) if HAVE_JAVA else ()
    ):
        assert unrelated[key] < perfect[key], key
    assert unrelated["exact_match"] == 0.0
    assert unrelated["cider"] < 0.5


def test_empty_predictions_are_valid_and_score_zero():
    scores = compute_caption_metrics(["", "   ", "..."], REFERENCES[:3], use_meteor=HAVE_JAVA)
    assert set(scores) >= {"bleu_4", "rouge_l", "cider", "exact_match"}
    for key, value in scores.items():
        assert value == pytest.approx(0.0, abs=1e-6), key


def test_one_empty_prediction_lowers_the_average():
    good = [r[0] for r in REFERENCES]
    with_empty = [""] + good[1:]
    full = compute_caption_metrics(good, REFERENCES, use_meteor=False)
    partial = compute_caption_metrics(with_empty, REFERENCES, use_meteor=False)
    assert partial["rouge_l"] == pytest.approx(full["rouge_l"] * 4 / 5)
    assert partial["exact_match"] == pytest.approx(0.8)


def test_captions_with_line_breaks_stay_aligned():
    # \r, form feed and U+2028 are line breaks for the Java tokenizer; they must not shift rows.
    predictions = ["a cat\ron a laptop", "a red\u2028bus", "two\x0cgiraffes in a field"]
    references = [["a cat on a laptop"], ["a red bus"], ["two giraffes in a field"]]
    scores = compute_caption_metrics(predictions, references, use_meteor=False)
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["exact_match"] == 1.0


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], [["a"]], "2 predictions but 1 reference"),
        ([], [], "nothing to evaluate"),
        ("a dog", [["a dog"]], "list of strings"),
        (["a dog"], [["a dog"], ["x"]], "1 predictions but 2"),
        (["a dog"], ["a dog"], r"references\[0\] must be a list"),
        (["a dog"], [[]], r"references\[0\] has no non-empty"),
        (["a dog"], [["", "  "]], r"references\[0\] has no non-empty"),
        ([None], [["a dog"]], r"predictions\[0\] must be a string"),
    ],
)
def test_bad_input_raises(predictions, references, message):
    with pytest.raises(DistilViTError, match=message):
        compute_caption_metrics(predictions, references, use_meteor=False)


def test_use_meteor_false_omits_meteor_and_never_calls_it(monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("METEOR must not run when use_meteor=False")

    monkeypatch.setattr(metrics_mod, "meteor_score", fail)
    scores = compute_caption_metrics(*CAPTION_SETS["close"], use_meteor=False)
    assert "meteor" not in scores
    assert set(scores) == set(CAPTION_METRIC_KEYS) - {"meteor"}


def test_java_missing_falls_back_with_warnings(monkeypatch):
    predictions, references = CAPTION_SETS["close"]
    with_java = compute_caption_metrics(predictions, references, use_meteor=False)

    real_which = shutil.which
    def which(cmd, *args, **kwargs):
        return None if cmd == "java" else real_which(cmd, *args, **kwargs)

    monkeypatch.setattr(shutil, "which", which)

    def no_process(*_args, **_kwargs):
        raise AssertionError("no Java process may be started when Java is missing")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with pytest.warns(RuntimeWarning) as record:
        scores = compute_caption_metrics(predictions, references, use_meteor=True)
    messages = " ".join(str(w.message) for w in record)
    assert "METEOR is skipped" in messages
    assert "pure-Python approximation" in messages
    assert "meteor" not in scores
    assert set(scores) == set(CAPTION_METRIC_KEYS) - {"meteor"}
    # The pure-Python tokenizer agrees with the PTB tokenizer on these ordinary captions.
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider", "exact_match"):
        assert scores[key] == pytest.approx(with_java[key], abs=1e-9), key


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("A dog runs.", ["a  dog runs"], True),
        ("a dog runs", ["A dog runs."], True),
        ("a dog runs ", ["x", "A DOG\tRUNS"], True),
        ("a dog", ["a dog runs"], False),
        ("a dog..", ["a dog"], False),
        ("", [""], False),
        ("a dog runs!", ["a dog runs"], False),
    ],
)
def test_exact_match_normalisation(prediction, references, expected):
    assert is_exact_match(prediction, references) is expected


def test_exact_match_fraction():
    scores = compute_caption_metrics(
        ["A red bus.", "a cat"], [["a red bus"], ["a dog"]], use_meteor=False
    )
    assert scores["exact_match"] == 0.5
    assert exact_match_flags(["A red bus.", "a cat"], [["a red bus"], ["a dog"]]) == [True, False]
    assert normalize_for_match("  A  Red bus . ") == "a red bus"


# ------------------------------------------------------------------------- METEOR singleton
class _FakeMeteor:
    """Stands in for pycocoevalcap's Meteor: a cheap child process, a lock, a fixed score."""

    started = 0

    def __init__(self):
        type(self).started += 1
        self.meteor_p = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lock = threading.Lock()

    def compute_score(self, gts, res):
        return 0.25, [0.25] * len(gts)


@pytest.fixture
def fake_meteor(monkeypatch):
    """Swap in _FakeMeteor with an empty singleton; the real singleton is restored afterwards."""
    monkeypatch.setattr(meteor_mod, "Meteor", _FakeMeteor)
    monkeypatch.setattr(meteor_mod, "_instance", None)
    monkeypatch.setattr(meteor_mod, "_atexit_registered", True)
    _FakeMeteor.started = 0
    yield _FakeMeteor
    meteor_mod.close_meteor()


def test_meteor_is_started_once_and_reused(fake_meteor):
    first = meteor_mod.get_meteor()
    compute_caption_metrics(*CAPTION_SETS["small"])
    scores = compute_caption_metrics(*CAPTION_SETS["small"])
    assert meteor_mod.get_meteor() is first
    assert fake_meteor.started == 1
    assert scores["meteor"] == 0.25


def test_close_meteor_stops_the_process_and_next_use_restarts(fake_meteor):
    first = meteor_mod.get_meteor()
    meteor_mod.close_meteor()
    assert first.meteor_p.poll() is not None
    second = meteor_mod.get_meteor()
    assert second is not first and fake_meteor.started == 2


def test_dead_meteor_process_is_replaced(fake_meteor):
    first = meteor_mod.get_meteor()
    first.meteor_p.kill()
    first.meteor_p.wait()
    assert meteor_mod.get_meteor() is not first


def test_failing_meteor_warns_and_omits_key(fake_meteor, monkeypatch):
    def broken(self, gts, res):
        self.lock.acquire()  # like pycocoevalcap, fail while holding the lock
        raise ValueError("could not convert string to float: ''")

    monkeypatch.setattr(_FakeMeteor, "compute_score", broken)
    scorer = meteor_mod.get_meteor()
    with pytest.warns(RuntimeWarning, match="METEOR is skipped"):
        scores = compute_caption_metrics(*CAPTION_SETS["small"])
    assert "meteor" not in scores and "cider" in scores
    assert scorer.meteor_p.poll() is not None
    assert not scorer.lock.locked()
    assert meteor_mod._instance is None


@needs_java
def test_real_meteor_singleton_is_reused():
    compute_caption_metrics(*CAPTION_SETS["small"])
    scorer = meteor_mod.get_meteor()
    compute_caption_metrics(*CAPTION_SETS["small"])
    assert meteor_mod.get_meteor() is scorer
    assert scorer.meteor_p.poll() is None
