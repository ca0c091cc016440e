"""The objects of each image: its ``objects`` column when the dataset has one, else the nouns of its captions.

Nouns are found with the word-category lexicon of `lemminflect <https://github.com/bjascob/LemmInflect>`_
(derived from the NIH SPECIALIST lexicon and shipped inside its wheel, so it works offline; a
statistical tagger such as spaCy's or NLTK's needs a model download, refused here). A caption word is
an object noun when the lexicon lists a noun reading for it, no adjective reading (``red``, ``two``,
``standing``) and no verb reading of another form (``sitting`` -> ``sit``), and it is not a pronoun or
determiner the lexicon files as a noun (:data:`FUNCTION_WORDS`). Plurals are reduced to the lexicon's
singular (``dogs`` -> ``dog``, ``children`` -> ``child``). An image counts once per class however many
captions name it. This is a lexicon, not a parser: a noun used as a modifier (``bus stop``) counts as
two objects.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable

#: Pronouns and determiners that the lexicon lists as nouns; never objects.
FUNCTION_WORDS = frozenset("its his her hers their theirs our ours your yours my mine it this that these those "
                           "one ones while someone something anyone anything everyone everything nothing".split())

_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


@functools.lru_cache(maxsize=65536)
def noun_lemma(word: str) -> str | None:
    """The singular of ``word`` when it is an object noun (see the module docstring), else ``None``."""
    from lemminflect import getAllLemmas

    word = word.lower()
    if len(word) < 3 or word in FUNCTION_WORDS:
        return None
    readings = getAllLemmas(word)
    nouns = readings.get("NOUN")
    if not nouns or "ADJ" in readings:
        return None
    if any(lemma != word for lemma in readings.get("VERB", ())) and word not in readings.get("VERB", ()):
        if nouns[0] == word:  # an inflected verb form the lexicon also files as a noun (sitting)
            return None
    return nouns[0]


def caption_nouns(caption: str) -> list[str]:
    """The object nouns of one caption, in order (repeats kept)."""
    return [lemma for lemma in (noun_lemma(w) for w in _WORD.findall(caption)) if lemma]


def image_objects(captions: Iterable[str], labels: object = None) -> list[str]:
    """The object classes of one image: its ``objects`` labels when given, else its captions' nouns (sorted, unique)."""
    if labels is not None:
        return sorted({str(label).strip().lower() for label in _labels(labels) if str(label).strip()})
    return sorted({noun for caption in captions for noun in caption_nouns(caption)})


def _labels(value: object) -> list:
    """An ``objects`` cell: a list of labels, a JSON list, a comma-separated string, or a dict with names."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return _labels(json.loads(text))
            except json.JSONDecodeError:
                pass
        return [part for part in text.split(",")]
    if isinstance(value, dict):  # e.g. {"name": [...]} or {"category": [...]}
        for key in ("name", "names", "label", "labels", "category", "categories"):
            if key in value:
                return _labels(value[key])
        return []
    if isinstance(value, (list, tuple)):
        return [item for entry in value for item in (_labels(entry) if isinstance(entry, (dict, list)) else [entry])]
    return [] if value is None else [value]
