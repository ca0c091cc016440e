"""Tests for distilvit.evaluation.tokenize (PTB tokenizer wrapper and pure-Python fallback)."""

from __future__ import annotations


import pytest
from java import needs_java
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from distilvit.evaluation import tokenize as tok
from distilvit.evaluation.tokenize import fallback_tokenize, normalize_whitespace, tokenize_captions


# Ordinary captions plus the constructs the PTB tokenizer treats specially.
CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two giraffes standing next to each other in a field",
    "A plate of food with broccoli, rice and meat.",
    "A red double-decker bus driving down a street",
    "The woman is holding an umbrella in the rain!",
    "A cat sitting on a laptop keyboard?",
    "An elephant (with tusks) walks through the grass.",
    "A 'STOP' sign at an intersection.",
    "A boy's bike leaning against a wall; it is red.",
    'A sign reads: "No parking".',
    "Children play soccer at 3:00 p.m. in the park.",
    "A close-up of a pizza with pepperoni & cheese.",
    "A vase with flowers on a table…",
    "Two dogs–one black, one white–play.",
    "“Quoted” caption ‘here’",
    "It’s a dog’s life",
    "A kite flying high in the sky!!",
    "A 10-year-old girl smiling",
    "Rock 'n' roll band on stage",
    "A man in his 20's",
    "price tag of $9.99, 50% off",
    "temperature is 30°C",
    "people at the U.K. border.",
    "Mr. Smith and Dr. Who at St. Paul's in the U.S.",
    "He can't, won't, shouldn't do it",
    "I'm gonna go, cannot stop",
    "the dogs' owner",
    "at 7 o'clock, 1,000 birds",
    "wow!! really?! ... end",
    "black-and-white photo of 3.5 cats",
    "a photo of 2 dogs + 1 cat = 3 pets",
    "yes/no question about a #1 fan",
    "A shape: red circle on the left of a [blue] {square}.",
    "-5 degrees outside",
    "J. Smith next to a letter E.",
    "café naïve — ok",
    "...",
    "",
]


@needs_java
def test_fallback_matches_java_ptb_tokenizer():
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(CAPTIONS)})
    mismatches = {
        c: (java[i][0], fallback_tokenize(c))
        for i, c in enumerate(CAPTIONS)
        if java[i][0] != fallback_tokenize(c)
    }
    assert not mismatches


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A dog's toy, isn't it?", "a dog 's toy is n't it"),
        ("An elephant (with tusks).", "an elephant -lrb- with tusks -rrb-"),
        ("3.5 cats, 1,000 dogs at 10:30", "3.5 cats 1,000 dogs at 10:30"),
        ("Dr. Who in the U.S.", "dr. who in the u.s."),
        ('He said "hi" -- ok...', "he said hi ok"),
        ("  A\tDOG\n", "a dog"),
        ("", ""),
    ],
)
def test_fallback_examples(caption, expected):
    assert fallback_tokenize(caption) == expected


def test_normalize_whitespace():
    assert normalize_whitespace(" a\r\nb\u2028c\x0cd\x85e  ") == "a b c d e"


@needs_java
def test_java_tokenizer_keeps_captions_aligned_across_line_breaks():
    result = tokenize_captions({0: ["a\rb", "c\u2028d"], 1: ["", "Eh."], 2: ["f"]})
    assert result == {0: ["a b", "c d"], 1: ["", "eh"], 2: ["f"]}


def test_without_java_uses_fallback(monkeypatch):
    def fail(_captions):
        raise AssertionError("the Java tokenizer must not run")

    monkeypatch.setattr(tok, "_run_ptb", fail)
    assert tokenize_captions({"x": ["A dog's toy."]}, use_java=False) == {"x": ["a dog 's toy"]}


def test_java_tokenizer_failure_warns_and_falls_back(monkeypatch):
    def broken(_captions):
        raise OSError("read-only file system")

    monkeypatch.setattr(tok, "_run_ptb", broken)
    with pytest.warns(RuntimeWarning, match="read-only file system"):
        result = tokenize_captions({0: ["A cat."], 1: ["Two dogs!"]})
    assert result == {0: ["a cat"], 1: ["two dogs"]}


def test_short_java_output_is_detected(monkeypatch):
    monkeypatch.setattr(PTBTokenizer, "tokenize", lambda self, caps: {0: ["a cat"]})
    with pytest.warns(RuntimeWarning, match="fewer lines"):
        result = tokenize_captions({0: ["A cat."], 1: ["Two dogs!"]})
    assert result == {0: ["a cat"], 1: ["two dogs"]}
