"""The rule-based caption rewrite of ``distilvit data debias`` (and the term counts of ``data report``).

The word lists are data (``debias_rules.json`` in this package, or the user's ``--rules FILE`` with the
same keys; see its ``description``). One caption is rewritten in this order:

1. ``text_in_image``: phrases that read out text shown in the image (``a sign that says "STOP"``) are
   deleted (the captioner must not be trained to read text);
2. ``protected_phrases`` are set aside (``french fries`` keeps ``french``);
3. ``replace``: gendered nouns and pronouns become neutral terms (``man`` -> ``person``, ``her`` ->
   ``their``), keeping the capital letter;
4. ``remove``: ethnic, religious and nationality markers are deleted; ``remove_before_person`` terms
   only right before a ``person_nouns`` word (``a black dog`` is kept, ``a black man`` is not);
5. ``counts``: number words and numerals (1 to 3 digits, before a word: not years) above ``above``
   become ``replacement`` (``three dogs`` -> ``several dogs``);
6. an ``a``/``an`` right before a changed word is fixed, spaces and punctuation tidied.

The rewrite is idempotent (no output term matches a rule again; a test checks it on every list entry).
When it would leave no word, the caption is kept unchanged and flagged.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from distilvit.errors import DataError

_MARK = "\u0001"  # marks a changed position while a caption is rewritten
_KEYS = ("replace", "remove", "remove_before_person", "person_nouns", "protected_phrases", "counts", "text_in_image")


def default_rules_text() -> str:
    return resources.files("distilvit.datatools").joinpath("debias_rules.json").read_text(encoding="utf-8")


def _words(terms) -> str:
    """A regex alternation of whole-word terms, longest first (spaces and hyphens match as written)."""
    escaped = sorted((re.escape(t.strip().lower()) for t in terms if t.strip()), key=len, reverse=True)
    return r"(?<![\w-])(?:" + "|".join(escaped) + r")(?![\w-])" if escaped else r"(?!x)x"


@dataclass
class Rewrite:
    """One rewritten caption: the text, and the rules that fired with their counts."""

    text: str
    rules: Counter = field(default_factory=Counter)
    flagged: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.rules)


class Rules:
    """Compiled de-bias rules (see the module docstring)."""

    def __init__(self, data: dict, origin: str = "rules"):
        missing = [key for key in _KEYS if key not in data]
        if missing:
            raise DataError(f"{origin}: the de-bias rules file lacks {', '.join(missing)} (see the default file, "
                            f"`distilvit/datatools/debias_rules.json`, for the layout)")
        try:
            self.replacements = {cat: {k.lower(): v for k, v in table.items()} for cat, table in data["replace"].items()}
            self.removals = {cat: list(terms) for cat, terms in data["remove"].items()}
            self.before_person = {cat: list(terms) for cat, terms in data["remove_before_person"].items()}
            counts = data["counts"]
            self.count_above = int(counts["above"])
            self.count_word = str(counts["replacement"])
            self.numbers = {k.lower(): int(v) for k, v in counts["numbers"].items()}
            self.numerals = bool(counts.get("numerals", True))
            self.text_patterns = [re.compile(p, re.IGNORECASE) for p in data["text_in_image"]]
            person = _words(data["person_nouns"])
            self._replace_re = {cat: re.compile(_words(table), re.IGNORECASE) for cat, table in self.replacements.items()}
            self._remove_re = {cat: re.compile(_words(terms) + r"\s*", re.IGNORECASE) for cat, terms in self.removals.items()}
            self._before_re = {cat: re.compile(_words(terms) + r"\s+(?=" + _MARK + r"*" + person + ")", re.IGNORECASE)
                               for cat, terms in self.before_person.items()}
            self._protected = re.compile(_words(data["protected_phrases"]), re.IGNORECASE)
            number_words = _words(self.numbers)
            self._count_re = re.compile(number_words + (r"|(?<![\w.,-])\d{1,3}(?![\d.,])(?=\s+[a-zA-Z])" if self.numerals else ""),
                                        re.IGNORECASE)
        except (AttributeError, TypeError, ValueError, KeyError, re.error) as err:
            raise DataError(f"{origin}: malformed de-bias rules ({type(err).__name__}: {err})") from None

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Rules":
        """The rules of ``path`` (a JSON file), or the default ones."""
        if path is None:
            return cls(json.loads(default_rules_text()), "the default de-bias rules")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"--rules {path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"--rules {path}: cannot read it as JSON ({err})") from None
        if not isinstance(data, dict):
            raise DataError(f"--rules {path}: expected a JSON object")
        return cls(data, f"--rules {path}")

    def categories(self) -> list[str]:
        """The protected-attribute categories, in order."""
        names = [*self.replacements, *self.removals, *self.before_person]
        return list(dict.fromkeys(names))

    # ------------------------------------------------------------------ rewriting
    def rewrite(self, caption: str) -> Rewrite:
        fired: Counter = Counter()
        text = caption
        for pattern in self.text_patterns:
            text, n = pattern.subn(_MARK, text)
            fired["text_in_image"] += n
        kept: list[str] = []

        def hide(match: re.Match) -> str:
            kept.append(match.group(0))
            return f"\u0002{len(kept) - 1}\u0003"

        text = self._protected.sub(hide, text)
        for category, pattern in self._replace_re.items():
            table = self.replacements[category]
            text, n = pattern.subn(lambda m, t=table: _MARK + _same_case(m.group(0), t[m.group(0).lower()]), text)
            fired[category] += n
        for category, pattern in self._before_re.items():
            text, n = pattern.subn(_MARK, text)
            fired[category] += n
        for category, pattern in self._remove_re.items():
            text, n = pattern.subn(_MARK, text)
            fired[category] += n
        text = self._count_re.sub(self._count, text)
        fired["counts"] += text.count("\u0004")
        text = text.replace("\u0004", "")
        text = re.sub("\u0002(\\d+)\u0003", lambda m: kept[int(m.group(1))], text)
        fired = Counter({k: v for k, v in fired.items() if v})
        if not fired:
            return Rewrite(caption)
        text = _tidy(text, caption)
        if not re.search(r"[A-Za-z]", text):
            return Rewrite(caption, fired, flagged=True)
        return Rewrite(text, fired)

    def _count(self, match: re.Match) -> str:
        word = match.group(0)
        value = int(word) if word.isdigit() else self.numbers[word.lower()]
        if value <= self.count_above:
            return word
        return "\u0004" + _MARK + _same_case(word, self.count_word)

    # ------------------------------------------------------------------ counting
    def find_terms(self, caption: str) -> Counter:
        """``(category, term) -> occurrences`` of the protected-attribute terms in ``caption``."""
        found: Counter = Counter()
        text = self._protected.sub(" ", caption)
        for category, pattern in self._replace_re.items():
            found.update((category, m.group(0).lower()) for m in pattern.finditer(text))
        for category, pattern in self._before_re.items():
            found.update((category, m.group(0).strip().lower()) for m in pattern.finditer(text))
        for category, pattern in self._remove_re.items():
            found.update((category, m.group(0).strip().lower()) for m in pattern.finditer(text))
        return found


def _same_case(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _tidy(text: str, original: str) -> str:
    """Fix ``a``/``an`` before a changed word, drop the marks, tidy spaces and punctuation."""
    def article(match: re.Match) -> str:
        word, following = match.group(1), match.group(2)
        wanted = "an" if following[:1].lower() in "aeiou" else "a"
        return _same_case(word, wanted) + " " + following

    text = re.sub(r"(?<![\w-])(a|an)\s+" + _MARK + r"+\s*([A-Za-z]+)", article, text, flags=re.IGNORECASE)
    text = text.replace(_MARK, " ")
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])\s*([,.;:!?])", r"\2", text)
    text = re.sub(r"^[\s,;:]+", "", text).strip()
    text = re.sub(r"(?<![\w-])(a|an)\s*([.,;:!?]|$)", r"\2", text, flags=re.IGNORECASE).strip()
    if original[:1].isupper() and text[:1].islower():
        text = text[:1].upper() + text[1:]
    return text
