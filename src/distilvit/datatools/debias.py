"""``distilvit data debias``: rewrite every caption of a dataset with the de-bias rules.

The output folder has the layout of ``data merge`` (splits kept) with these columns changed or added:
``alt_text`` (the rewritten captions), ``original_alt_text`` (the captions before any de-biasing:
taken over from the input when it already has them, so running ``debias`` again changes nothing),
``debias_rules`` (the rules that changed the row) and ``debias_flagged`` (a rewrite would have left a
caption without a word; that caption is kept as it was). What changed is printed by rule and saved
as ``debias_changes.json`` (counts by rule and by term, examples) and ``debias_changes.csv`` (every
changed caption, before and after).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from distilvit.data.schema import SPLITS, string_list_feature
from distilvit.datatools.card import dataset_card
from distilvit.datatools.rules import Rewrite, Rules
from distilvit.datatools.table import read_table
from distilvit.datatools.writer import check_out_dir, write_dataset

logger = logging.getLogger("distilvit.datatools")
EXAMPLES_PER_RULE = 5


@dataclass
class ChangeLog:
    """What the rewrite changed: captions and occurrences by rule, terms found, examples, flagged rows."""

    captions: int = 0
    changed: int = 0
    flagged: int = 0
    by_rule: Counter = field(default_factory=Counter)  # captions changed by each rule
    occurrences: Counter = field(default_factory=Counter)  # substitutions by rule
    terms: Counter = field(default_factory=Counter)  # "category:term" found before
    examples: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)

    def add(self, rules: Rules, caption: str, result: Rewrite, where: dict) -> None:
        self.captions += 1
        self.terms.update(f"{cat}:{term}" for (cat, term), n in rules.find_terms(caption).items() for _ in range(n))
        if result.flagged:
            self.flagged += 1
        if not result.changed:
            return
        if result.text != caption:
            self.changed += 1
        for rule, count in result.rules.items():
            self.by_rule[rule] += 1
            self.occurrences[rule] += count
            examples = self.examples.setdefault(rule, [])
            if len(examples) < EXAMPLES_PER_RULE and result.text != caption:
                examples.append({"before": caption, "after": result.text})
        self.rows.append({**where, "rules": " ".join(sorted(result.rules)), "flagged": result.flagged,
                          "before": caption, "after": result.text})

    def to_json(self) -> dict:
        return {"captions": self.captions, "captions_changed": self.changed, "captions_flagged": self.flagged,
                "captions_changed_by_rule": dict(self.by_rule.most_common()),
                "substitutions_by_rule": dict(self.occurrences.most_common()),
                "terms_found": dict(self.terms.most_common()), "examples": self.examples}

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["split", "source", "source_id", "rules", "flagged", "before",
                                                    "after"])
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    def summary(self) -> str:
        lines = [f"{self.changed} of {self.captions} captions changed; {self.flagged} flagged (kept: the rewrite "
                 "would have left no word)", "rule            captions  substitutions"]
        lines += [f"{rule:<15} {n:>8}  {self.occurrences[rule]:>13}" for rule, n in self.by_rule.most_common()]
        return "\n".join(lines)


def debias_table(table: datasets.Dataset, rules: Rules, rewriter=None) -> tuple[datasets.Dataset, ChangeLog]:
    """The rewritten table and what changed (``rewriter``: an optional :class:`LLMRewriter`)."""
    log = ChangeLog()
    has_original = "original_alt_text" in table.column_names
    columns = table.select_columns(["alt_text", "split", "source", "source_id"]
                                   + (["original_alt_text"] if has_original else []))
    new_captions, originals, fired, flagged = [], [], [], []
    for row in tqdm(columns, total=len(columns), desc="de-biasing", unit="row"):
        where = {"split": row["split"], "source": row["source"], "source_id": row["source_id"]}
        row_rules: set[str] = set()
        row_flag = False
        rewritten = []
        for caption in row["alt_text"]:
            result = _rewrite(rules, caption, rewriter)
            log.add(rules, caption, result, where)
            rewritten.append(result.text)
            row_rules.update(result.rules)
            row_flag = row_flag or result.flagged
        new_captions.append(rewritten)
        originals.append(row["original_alt_text"] if has_original and row["original_alt_text"] else row["alt_text"])
        fired.append(sorted(row_rules))
        flagged.append(row_flag)
    out = table.remove_columns([c for c in ("alt_text", "original_alt_text", "debias_rules", "debias_flagged")
                                if c in table.column_names])
    out = out.add_column("alt_text", new_captions, feature=string_list_feature())
    out = out.add_column("original_alt_text", originals, feature=string_list_feature())
    out = out.add_column("debias_rules", fired, feature=string_list_feature())
    out = out.add_column("debias_flagged", flagged, feature=datasets.Value("bool"))
    return out, log


def _rewrite(rules: Rules, caption: str, rewriter) -> Rewrite:
    if rewriter is None:
        return rules.rewrite(caption)
    answer = rewriter.rewrite(caption)
    if not answer.strip():
        return rules.rewrite(caption)
    result = rules.rewrite(answer)
    if result.flagged:
        return rules.rewrite(caption)
    result.rules["llm"] += int(answer != caption)
    if not result.rules["llm"]:
        del result.rules["llm"]
    return result


def debias_job(specs: list[str], out: str | Path, *, rules_file: str | None = None, llm_url: str | None = None,
               llm_model: str = "gpt-4o-mini", llm_api_key_env: str = "OPENAI_API_KEY", overwrite: bool = False,
               seed: int = 42) -> str:
    """Read ``specs``, rewrite, write ``out``; returns the summary to print."""
    rules = Rules.load(rules_file)
    check_out_dir(out, overwrite=overwrite)
    rewriter = None
    if llm_url:
        from distilvit.datatools.llm_rewrite import LLMRewriter

        rewriter = LLMRewriter(llm_url, llm_model, api_key_env=llm_api_key_env)
    table = read_table(specs, seed=seed)
    rewritten, log = debias_table(table, rules, rewriter)
    split_column = rewritten["split"]
    splits = datasets.DatasetDict({
        name: rewritten.select([i for i, s in enumerate(split_column) if s == name]).remove_columns("split")
        for name in SPLITS})
    counts = {name: len(t) for name, t in splits.items()}
    summary = [f"De-biased from {', '.join(specs)} with {rules_file or 'the default rules'}"
               + (f" and the rewrite endpoint {llm_url} ({llm_model})" if llm_url else "") + ".", "",
               "```", log.summary(), "```"]
    card = dataset_card(Path(out).name, counts=counts, summary=summary,
                        config={"sources": ", ".join(specs), "rules": rules_file or "default",
                                "rewrite endpoint": llm_url or "none"},
                        columns=[c for c in rewritten.column_names if c != "split"])
    folder = write_dataset(splits, out, card, overwrite=overwrite, extra_files={
        "debias_changes.json": json.dumps(log.to_json(), indent=2, ensure_ascii=False) + "\n",
        "debias_changes.csv": log.to_csv()})
    return f"{log.summary()}\nwrote {folder} (changes: debias_changes.json, debias_changes.csv)"
