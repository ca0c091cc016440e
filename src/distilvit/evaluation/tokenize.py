"""Caption tokenization for the COCO caption metrics.

The official COCO caption evaluation lower-cases and tokenizes every caption with the Stanford
PTB tokenizer (a Java program shipped with pycocoevalcap) and then drops punctuation tokens. This
module wraps that tokenizer and provides :func:`fallback_tokenize`, a pure-Python approximation of
it used when no Java runtime is available. The approximation reproduces the PTB tokenizer on
ordinary captions (clitics such as ``dog 's`` / ``do n't``, numbers such as ``3.5`` / ``1,000`` /
``10:30``, hyphenated words, abbreviations such as ``u.s.`` / ``mr.`` / ``j.``, brackets kept as
``-lrb-`` like pycocoevalcap does) but is not guaranteed to be identical on unusual text.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Hashable, Mapping, Sequence

from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS as PTB_PUNCTUATIONS
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

__all__ = [
    "PTB_PUNCTUATIONS",
    "fallback_tokenize",
    "normalize_whitespace",
    "tokenize_captions",
]

# Tokens dropped after tokenization (pycocoevalcap's list; the PTB tokenizer turns `"` into quote
# tokens that are in that list, so a bare `"` is dropped too).
_DROPPED = frozenset(PTB_PUNCTUATIONS) | {'"'}

# Characters the PTB tokenizer normalises before splitting.
_CHAR_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": " ... ",
        "\u2013": " -- ",
        "\u2014": " -- ",
    }
)

# pycocoevalcap runs the PTB tokenizer with -lowerCase, so bracket tokens come out lower-cased and
# are *not* removed by its (upper-case) punctuation list. Mimic that quirk.
_BRACKETS = {
    "(": "-lrb-",
    ")": "-rrb-",
    "[": "-lsb-",
    "]": "-rsb-",
    "{": "-lcb-",
    "}": "-rcb-",
}

_ABBREVIATIONS = ("mrs", "mr", "ms", "dr", "st", "jr", "sr", "prof", "etc", "vs")

# Splits applied to the whole lower-cased string before the token regex.
_SPLITS = (
    (re.compile(r"\b(can)(not)\b"), r"\1 \2"),
    (re.compile(r"\b(gon|wan)(na)\b"), r"\1 \2"),
    (re.compile(r"\b(got)(ta)\b"), r"\1 \2"),
    (re.compile(r"(\w)(n't)\b"), r"\1 \2"),
    (re.compile(r"(\w)('(?:s|re|ve|d|ll|m))\b"), r"\1 \2"),
)

_LETTER = r"[^\W\d_]"
_ALNUM = r"[^\W_]"
_TOKEN_RE = re.compile(
    "|".join(
        (
            rf"(?:{_LETTER}\.){{2,}}",  # u.s.  e.g.  p.m.
            rf"{_LETTER}\.(?!{_ALNUM})",  # initials and lone letters: j.  e.
            rf"(?:{'|'.join(_ABBREVIATIONS)})\.(?!{_ALNUM})",  # mr.  st.  etc.
            rf"[#@]{_LETTER}\w*",  # #hashtag  @mention
            r"'\d\ds\b",  # '90s
            r"'(?:s|re|ve|d|ll|m)\b",  # clitics split off above
            r"n't\b",
            r"'n'",  # rock 'n' roll
            r"\d+(?:[.,:/]\d+)+",  # 3.5  1,000  10:30  2.0.1
            r"(?<!\S)-\d+(?:[.,]\d+)*",  # -5  -2.5
            rf"{_ALNUM}+(?:[-/&']{_ALNUM}+)*",  # words, black-and-white, o'clock, yes/no
            r"\.{2,}",
            r"-{2,}",
            r"[!?]+",
            r"\S",  # any other symbol on its own
        )
    )
)


def normalize_whitespace(text: str) -> str:
    """Collapse every run of (Unicode) whitespace, line breaks included, to one space and strip.

    The PTB tokenizer is line based: a carriage return, form feed or Unicode line separator inside
    a caption would otherwise split it in two and shift every following caption.
    """
    return " ".join(text.split())


def fallback_tokenize(text: str) -> str:
    """Tokenize one caption like pycocoevalcap's PTB tokenizer, in pure Python.

    Lower-cases, splits punctuation and clitics off words, and drops the punctuation tokens the
    COCO evaluation drops. Returns the tokens joined by single spaces (``""`` for no tokens).

    >>> fallback_tokenize("A dog's toy, isn't it?")
    "a dog 's toy is n't it"
    """
    text = normalize_whitespace(text.lower().translate(_CHAR_MAP))
    for pattern, replacement in _SPLITS:
        text = pattern.sub(replacement, text)
    tokens = (_BRACKETS.get(tok, tok) for tok in _TOKEN_RE.findall(text))
    return " ".join(tok for tok in tokens if tok not in _DROPPED)


def _run_ptb(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Tokenize with pycocoevalcap's Java PTB tokenizer and check that nothing was lost."""
    coco_style = {key: [{"caption": c} for c in caps] for key, caps in captions.items()}
    result = PTBTokenizer().tokenize(coco_style)
    for key, caps in captions.items():
        if len(result.get(key, ())) != len(caps):
            raise RuntimeError("the PTB tokenizer returned fewer lines than it was given")
    return {key: list(result[key]) for key in captions}


#: names of the tokenizers :func:`tokenize_captions_named` reports: pycocoevalcap's Java PTB tokenizer, or
#: :func:`fallback_tokenize` (recorded in ``metrics.json`` by ``distilvit eval``)
PTB_JAVA = "ptb-java"
PYTHON_FALLBACK = "python-fallback"


def tokenize_captions(
    captions: Mapping[Hashable, Sequence[str]], *, use_java: bool = True
) -> dict[Hashable, list[str]]:
    """Tokenize ``{id: [caption, ...]}`` the way the COCO caption evaluation does.

    Whitespace (line breaks included) is normalised first so that the line-based Java tokenizer
    keeps captions aligned; empty captions stay empty. With ``use_java=True`` pycocoevalcap's
    ``PTBTokenizer`` is used; if it fails (for example its package folder is read-only or the JVM
    does not start) a warning is issued and :func:`fallback_tokenize` is used instead, as it is
    when ``use_java=False``.
    """
    return tokenize_captions_named(captions, use_java=use_java)[0]


def tokenize_captions_named(
    captions: Mapping[Hashable, Sequence[str]], *, use_java: bool = True
) -> tuple[dict[Hashable, list[str]], str]:
    """:func:`tokenize_captions`, plus the name of the tokenizer that ran (:data:`PTB_JAVA` or
    :data:`PYTHON_FALLBACK`)."""
    cleaned = {key: [normalize_whitespace(c) for c in caps] for key, caps in captions.items()}
    if use_java:
        try:
            return _run_ptb(cleaned), PTB_JAVA
        except (OSError, RuntimeError) as err:
            warnings.warn(
                f"the Java PTB tokenizer failed ({err}); captions are tokenized with a "
                "pure-Python approximation, so scores may differ slightly from the official "
                "COCO evaluation.",
                RuntimeWarning,
                stacklevel=2,
            )
    return {key: [fallback_tokenize(c) for c in caps] for key, caps in cleaned.items()}, PYTHON_FALLBACK
