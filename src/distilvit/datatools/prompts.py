"""``distilvit data synth-prompts``: text-to-image prompts for the rare object classes of a report.

For each rare class of ``report.json`` (``objects.rare_classes``):

* ``single`` prompts: the class alone, one per template of :data:`SINGLE_TEMPLATES` (up to ``per_class``);
* ``combination`` prompts: the class with each class it co-occurs with in the data (``objects.
  cooccurring_with_rare``), and, when it co-occurs with none, with the other rare classes (up to
  ``combinations`` per class).

Every prompt goes through the de-bias rules (the same file as ``debias``: ``--rules``), so a prompt never
asks for a gender, an ethnicity, a religion or a nationality, nor for more than two of anything. One JSON
object per line: ``{"prompt", "objects", "original_count", "type"}`` (``original_count``: images of the
rare class in the data; ``objects`` are the de-biased class names, ``woman`` -> ``person``).
"""

from __future__ import annotations

import json
from pathlib import Path

from distilvit.datatools.rules import Rules
from distilvit.errors import DataError

SINGLE_TEMPLATES = (
    "a photo of {a} {x}",
    "{a} {x} in a typical everyday setting, natural light",
    "a close-up photo of {a} {x}",
    "{a} {x} seen from a distance, everyday scene",
)
COMBINATION_TEMPLATE = "a photo of {a} {x} and {b} {y}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def read_report(folder: str | Path) -> dict:
    path = Path(folder).expanduser() / "report.json"
    if not path.is_file():
        raise DataError(f"--report {folder}: no report.json in it; give the --out folder of `distilvit data report`")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        objects = report["objects"]
        rare = [(str(r["class"]), int(r["count"])) for r in objects["rare_classes"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path} is not a `distilvit data report` report.json ({type(err).__name__}: {err})") from None
    return {"rare": rare, "cooccurring": objects.get("cooccurring_with_rare") or {}}


def make_prompts(report: dict, rules: Rules, *, per_class: int = 2, combinations: int = 2) -> list[dict]:
    """The prompts of the rare classes of a :func:`read_report` result (see the module docstring)."""
    rare = report["rare"]
    rare_names = [name for name, _ in rare]
    prompts: list[dict] = []
    seen: set[str] = set()

    def add(text: str, objects: list[str], count: int, kind: str) -> None:
        prompt = rules.rewrite(text).text
        if prompt not in seen:
            seen.add(prompt)
            prompts.append({"prompt": prompt, "objects": [rules.rewrite(o).text for o in objects],
                            "original_count": count, "type": kind})

    for name, count in rare:
        for template in SINGLE_TEMPLATES[:per_class]:
            add(template.format(a=_article(name), x=name), [name], count, "single")
        partners = [other for other, _ in report["cooccurring"].get(name, []) if other != name]
        if not partners:
            partners = [other for other in rare_names if other != name]
        for other in partners[:combinations]:
            add(COMBINATION_TEMPLATE.format(a=_article(name), x=name, b=_article(other), y=other), [name, other],
                count, "combination")
    return prompts


def synth_prompts_job(report_dir: str, out: str, *, rules_file: str | None = None, per_class: int = 2,
                      combinations: int = 2, overwrite: bool = False) -> str:
    """Write the prompts as JSONL to ``out``; returns the summary to print."""
    rules = Rules.load(rules_file)
    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise DataError(f"--out {target} already exists; choose another file or add --overwrite")
    report = read_report(report_dir)
    prompts = make_prompts(report, rules, per_class=per_class, combinations=combinations)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    partial.replace(target)
    kinds = {kind: sum(p["type"] == kind for p in prompts) for kind in ("single", "combination")}
    return (f"{len(prompts)} prompts for {len(report['rare'])} rare classes ({kinds['single']} single, "
            f"{kinds['combination']} combinations) -> {target}")
