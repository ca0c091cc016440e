"""Every number in README.md and docs/*.md has a source: a committed script under benchmarks/ and the results file
it wrote, cited next to the figure.

What the test checks:

1. Every cited results file (``benchmarks/results/NAME.ext``, also ``NAME.{json,md}`` and ``NAME.*``) exists,
   every cited script (``benchmarks/NAME.py``) exists, and every results file in ``benchmarks/results/`` was
   written by a committed script (its name starts with the script's: ``load_test_batch1.md`` <- ``load_test.py``).
2. Every *measurement* in the docs sits in a block that cites a results file. The rule, precisely:

   * The docs are cut into blocks: a paragraph, one list item (with its continuation lines), a table (its rows),
     a heading. Fenced code is skipped. A block is *cited* when it names ``benchmarks/results/...``; a table is
     also cited when the block just before it (its caption) is, and any block is cited when the heading of its
     section is. Its *sources* are all those results files.
   * A *measurement* is a number followed by a unit of time (``us``, ``ms``, ``s``, ``min``, ``minutes``), size
     (``KB``, ``MB``, ``MiB``, ``GB``, ``GiB``), rate (``samples/s``, ``tokens/s``, ``requests/s``,
     ``images/s``, ``GFLOP/s``, ``GOPS``), work (``GFLOP``), share (``%``, ``points``) or ratio (``x``, as in
     ``3.06x``, but not a shape such as ``2x2`` or ``320x240``); ranges such as ``245-258 ms`` count.
   * Not measurements, and so exempt: anything inside inline code (`` `--timeout 60` ``); a figure whose short
     clause (its table cell, or the ``;``-separated part of its innermost parenthesised group, at most 80
     characters) names an option (`` `--max-upload-mb` ``) or says ``default``, or whose parenthesised group
     follows an option name (`` `--timeout` (60 s) ``): a default or limit of the code, not a result; the figures listed in ``NOT_MEASURED`` below, each with the reason
     it is not a measurement (a specification, an input of a benchmark, arithmetic on documented defaults).
   * A number with decimals (``9.42``) is a measurement too, unless it is a version (after a package name:
     ``Python 3.11``) or a count in millions (``182.5M parameters``). Counts of things (``196 tokens``,
     ``200 images``) and option values without decimals carry no unit above and are never flagged.

3. Every other measurement in a cited block, and every number with decimals there (CIDEr 9.4184), is one of
   the cited results files' numbers, rounded to the figure's decimals (or that number as a percentage, or milliseconds written as seconds), unless listed in
   ``DERIVED``.
4. Every ratio (``N.NNx``) in a cited block is written with the digits its sources write (``3.06x``, never a
   rounded ``3.1x`` or ``3x``; a ``.md`` and ``.json`` of the same name count as one source), unless it is 1 (a
   baseline) or listed in ``DERIVED`` with the computation behind it.
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# (file name, exact text of the figure with a few words around it, why it is not a measurement)
NOT_MEASURED: list[tuple[str, str, str]] = [
    ("README.md", "the projection input becomes 4x wider", "definition: shuffle2 concatenates 4 neighbours"),
    ("README.md", "16 concurrent clients, 10% malformed", "an input of the load test, not a result"),
    ("browser.md", "protobuf's 2 GB limit", "a limit of the protobuf format"),
    ("browser.md", "a WebAssembly page has 4 GB of memory", "the wasm32 address space"),
    ("export.md", "protobuf's 2 GB limit", "a limit of the protobuf format"),
    ("demo.md", "LoRA r16 (dropout 0.05)", "an option value of the recipe (configs/shapes-demo.args)"),
]

# (file name, text around a figure computed from a cited results file's numbers, or a target, and why)
DERIVED: list[tuple[str, str, str]] = [
    ("demo.md", "blind baseline by 11.2x in CIDEr (9.418 vs 0.844)", "cider 9.4184 / 0.8444 (grounding.json)"),
    ("speed.md", "| 0.58 | 1.57x |", "samples/s (b) 0.583 / (a) 0.372 (train_throughput.json)"),
    ("speed.md", "The 10x target is not reached", "a target, not a result"),
    ("export.md", "by a thin margin over 3x", "the project's 3x goal, not a result"),
    ("speed.md", "2 FMA x 8 lanes x 2 x ~3 GHz = ~96 GFLOP/s", "the core's nominal fp32 peak, arithmetic"),
]

CLAUSE = 80  # longest clause that counts as an option's note
UNITS = (r"samples/s|tokens/s|requests/s|images/s|GFLOP/s|GOPS|GFLOP|MiB|GiB|MB|GB|KB|kB|us|µs|ms|minutes|min|s"
         r"|%|points")
NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
RANGE = rf"{NUMBER}(?:\s?[-–]\s?\d[\d,]*(?:\.\d+)?)?"
MEASUREMENT = re.compile(rf"{RANGE}\s?(?:{UNITS})(?![\w/])|{RANGE}x(?![\w\d])")
RESULTS_CITE = re.compile(r"benchmarks/results/[\w.{},*-]+")
SCRIPT_CITE = re.compile(r"benchmarks/([\w-]+)\.py")
CODE_SPAN = re.compile(r"`[^`]*`")
DECIMAL = re.compile(r"(?<![\w.\-/])\d+\.\d+(?![\w.]*\d)")
VERSION = re.compile(r"(?:Python|onnxruntime|onnxruntime-web|torch|transformers|gradio|Pillow|Java) $")


def expand(cited: str) -> list[str]:
    """``benchmarks/results/a.{json,md}`` -> both names; trailing punctuation dropped."""
    cited = cited.rstrip(".,")
    parts = re.split(r"\{([^}]*)\}", cited)
    options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(choice) for choice in product(*options)]


def blocks(path: Path) -> list[dict]:
    """The file's blocks in order: ``{"kind", "line", "text", "sources", "cited"}`` (``sources``: the results
    files that cover the block), fenced code left out."""
    found, current, in_fence = [], None, False

    def close():
        nonlocal current
        if current:
            found.append(current)
        current = None

    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            close()
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        stripped = line.strip()
        kind = ("blank" if not stripped else "heading" if stripped.startswith("#") else
                "table" if stripped.startswith("|") else
                "item" if re.match(r"([*-]|\d+\.)\s", stripped) else "text")
        if kind == "blank":
            close()
        elif kind == "heading" or kind == "item" or current is None or (kind == "table") != (current["kind"] == "table"):
            close()
            current = {"kind": "paragraph" if kind == "text" else kind, "line": number, "text": line}
            if kind == "heading":
                close()
        else:
            current["text"] += "\n" + line
    close()
    heading_sources: list[str] = []
    for i, block in enumerate(found):
        block["sources"] = RESULTS_CITE.findall(block["text"])
        if block["kind"] == "heading":
            heading_sources = block["sources"]
        elif not block["sources"] and block["kind"] == "table" and i and found[i - 1]["sources"]:
            block["sources"] = found[i - 1]["sources"]
        block["sources"] = block["sources"] + [c for c in heading_sources if c not in block["sources"]]
        block["cited"] = bool(block["sources"])
    return found


def option_context(text: str, start: int, end: int) -> bool:
    """Whether the figure at ``text[start:end]`` is an option value: the short clause around it (its table cell,
    or the ``;``-separated part of its innermost parenthesised group, at most ``CLAUSE`` characters) names an
    option or says "default", or its parenthesised group follows an option name (`` `--timeout` (60 s) ``)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start: len(text) if line_end < 0 else line_end]
    pos = start - line_start
    if line.lstrip().startswith("|"):
        left, right = line.rfind("|", 0, pos), line.find("|", pos)
        clause = line[left + 1: right if right >= 0 else len(line)]
    else:
        depth, left = 0, None
        for i in range(start - 1, -1, -1):
            if text[i] == ")":
                depth += 1
            elif text[i] == "(":
                if depth == 0:
                    left = i
                    break
                depth -= 1
        if left is None:
            return False
        right, depth = len(text), 0
        for i in range(left + 1, len(text)):
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                if depth == 0:
                    right = i
                    break
                depth -= 1
        if text[:left].rstrip().endswith("OPTION"):
            return True
        head, tail = text.rfind(";", left, start), text.find(";", end, right)
        clause = text[max(head, left) + 1: tail if tail >= 0 else right]
    clause = " ".join(clause.split())
    return len(clause) <= CLAUSE and ("OPTION" in clause or re.search(r"\bdefaults?\b", clause) is not None)


def uncited_measurements(path: Path) -> list[str]:
    """``"file:line: figure | context"`` for every measurement outside a cited block."""
    allowed = [(name, text) for name, text, _ in NOT_MEASURED if name == path.name]
    problems = []
    for block in blocks(path):
        if block["cited"] or block["kind"] == "heading":
            continue
        raw = block["text"]
        text = CODE_SPAN.sub(lambda m: "OPTION" if m.group()[1:3] == "--" else "CODE", raw)
        flat = " ".join(raw.split())
        measured = list(MEASUREMENT.finditer(text))
        spans = [m.span() for m in measured]
        decimals = [m for m in DECIMAL.finditer(text)  # a bare 9.42 (a CIDEr, say) counts as a measurement too
                    if not any(a <= m.start() < b for a, b in spans)
                    and not VERSION.search(text[: m.start()]) and not re.match(r"M(?![A-Za-z])", text[m.end():])]
        for match in measured + decimals:
            if option_context(text, match.start(), match.end()):
                continue
            figure = match.group()
            if any(figure in snippet and snippet in flat for _, snippet in allowed):
                continue
            line = block["line"] + text.count("\n", 0, match.start())
            context = " ".join(text[max(0, match.start() - 50): match.end() + 30].split())
            problems.append(f"{path.relative_to(ROOT)}:{line}: {figure!r} in '...{context}...'")
    return problems


RATIO = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)x(?![\w\d])")


def results_text(sources: list[str]) -> str:
    """The text of the cited results files and of their siblings of the same name (``.md`` <-> ``.json``)."""
    paths = set()
    for cited in sources:
        for name in expand(cited):
            for found in ROOT.glob(name):
                paths.update(found.parent.glob(found.stem + ".*"))
    return "\n".join(p.read_text() for p in sorted(paths) if p.suffix in (".md", ".json"))


def unmatched_ratios(path: Path) -> list[str]:
    """Speed-ups and other ``N.NNx`` ratios in cited blocks whose digits are not in the cited results files."""
    derived = [(name, text) for name, text, _ in DERIVED if name == path.name]
    problems = []
    for block in blocks(path):
        if not block["cited"] or block["kind"] == "heading":
            continue
        text = CODE_SPAN.sub("CODE", block["text"])
        flat = " ".join(block["text"].split())
        source = results_text(block["sources"])
        for match in RATIO.finditer(text):
            value = match.group(1)
            if float(value) == 1.0 or re.search(rf"(?<![\d.]){re.escape(value)}(?!\.?\d)", source):
                continue
            if any(match.group() in snippet and snippet in flat for _, snippet in derived):
                continue
            problems.append(f"{path.relative_to(ROOT)}:{block['line']}: {match.group()!r} is not in {block['sources']}")
    return problems


def unmatched_figures(path: Path) -> list[str]:
    """Measurements (with a unit, ratios aside) and numbers with decimals in cited blocks that no number of the
    cited results files gives when rounded to the figure's decimals (as is, as a percentage of a fraction, or ms
    as s)."""
    derived = [(name, text) for name, text, _ in DERIVED if name == path.name]
    problems = []
    for block in blocks(path):
        if not block["cited"] or block["kind"] == "heading":
            continue
        text = CODE_SPAN.sub(lambda m: "OPTION" if m.group()[1:3] == "--" else "CODE", block["text"])
        flat = " ".join(block["text"].split())
        source = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", results_text(block["sources"]).replace(",", ""))]
        numbers: list[tuple[str, str]] = []
        for match in MEASUREMENT.finditer(text):
            if match.group().endswith("x") or option_context(text, match.start(), match.end()):
                continue
            if any(match.group() in snippet and snippet in flat for _, snippet in derived):
                continue
            numbers += [(number, match.group()) for number in re.findall(r"\d[\d,]*(?:\.\d+)?", match.group())]
        # unitless decimals too (CIDEr 9.4184, BLEU-4 0.975), ratios aside (checked digit for digit)
        numbers += [(m.group(), m.group()) for m in DECIMAL.finditer(text) if not text[m.end():].startswith("x")
                    and not any(m.group() in snippet and snippet in flat for _, snippet in derived)]
        for number, figure in dict.fromkeys(numbers):
            number = number.replace(",", "")
            value, half = float(number), 0.5 * 10 ** -(len(number.split(".")[1]) if "." in number else 0)
            if not any(abs(x - value) <= half + 1e-9 for v in source for x in (v, 100 * v, v / 1000)):
                problems.append(f"{path.relative_to(ROOT)}:{block['line']}: {number} (in {figure!r}) "
                                f"is not in {block['sources']}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_cited_figures_are_in_their_results_files(path):
    """A cited measurement is one of its results file's numbers, rounded (not a number from elsewhere)."""
    assert unmatched_figures(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_cited_ratios_are_the_results_files_own(path):
    """A speed-up is written as its results file writes it (3.06x, not 3.1x), or listed in DERIVED with its formula."""
    assert unmatched_ratios(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_cited_results_files_and_scripts_exist(path):
    text = path.read_text()
    missing = []
    for cited in RESULTS_CITE.findall(text):
        for name in expand(cited):
            if not list(ROOT.glob(name)):
                missing.append(name)
    for script in SCRIPT_CITE.findall(text):
        if not (ROOT / "benchmarks" / f"{script}.py").is_file():
            missing.append(f"benchmarks/{script}.py")
    assert missing == [], f"{path.name} cites files that are not committed: {sorted(set(missing))}"


def test_every_results_file_comes_from_a_committed_script():
    scripts = [p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "common"]
    orphans = [p.name for p in RESULTS.iterdir() if not any(p.stem.startswith(s) for s in scripts)]
    assert orphans == [], f"results without a script in benchmarks/: {orphans}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_every_measurement_cites_its_results_file(path):
    problems = uncited_measurements(path)
    assert problems == [], (
        "measurements without a cited results file (cite benchmarks/results/NAME next to the figure, or remove "
        "the figure; a figure that is not a measurement goes into NOT_MEASURED with its reason):\n"
        + "\n".join(problems))


def test_not_measured_entries_are_still_in_the_docs():
    flat = {p.name: " ".join(p.read_text().split()) for p in doc_files()}
    stale = [(name, text) for name, text, _ in NOT_MEASURED if text not in flat.get(name, "")]
    assert stale == [], f"NOT_MEASURED entries no longer in the docs (remove them): {stale}"


def test_the_rule_catches_an_uncited_speed_figure(tmp_path):
    doc = tmp_path / "probe.md"
    doc.write_text(
        "Defaults: `--timeout` (60 s), images wait (default 10 ms); a 2x2 grid of 320x240 px, 196 tokens.\n\n"
        "The same, measured (`benchmarks/results/inference_latency.md`): 3.06x, 564.7 ms.\n\n"
        "| system | ms |\n|---|---|\n| int4 | 564.7 ms |\n\n"
        "Captioning got 3.1x faster: 565 ms per image, 16.5 requests/s, CIDEr 7.12 (Python 3.11, 182.5M weights).\n\n"
        "| system | ms |\n|---|---|\n| int4 | 565 ms |\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = uncited_measurements(doc)
    finally:
        ROOT = saved
    figures = [line.split(": ", 1)[1].split(" in ")[0] for line in found]
    assert figures == ["'3.1x'", "'565 ms'", "'16.5 requests/s'", "'7.12'", "'565 ms'"]
