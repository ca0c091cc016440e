"""The docs name the CLI's options as the code defines them: every option of every `distilvit` command is in
README.md, every `--option` the docs name exists (in the CLI, a benchmark script or the web demo's scripts), and the
defaults README.md states beside an option are the parser's."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from distilvit.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# options the docs name on purpose although nothing defines them
NAMED_AS_ABSENT = {"--share"}  # docs/serving.md: the Gradio command has no --share option
HELP = {"--help"}


def commands() -> dict[str, argparse.ArgumentParser]:
    """``{"train": parser, "cache info": parser, ...}``: every (sub)command's parser."""
    found = {}

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix} {name}".strip()] = sub
                    walk(sub, f"{prefix} {name}")

    walk(build_parser(), "")
    return found


def cli_options() -> dict[str, dict[str, object]]:
    """``{option: {command: default}}`` over every command."""
    options: dict[str, dict[str, object]] = {}
    for name, parser in commands().items():
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    options.setdefault(option, {})[name] = action.default
    return options


def script_options() -> set[str]:
    files = [*(ROOT / "benchmarks").glob("*.py"), ROOT / "web" / "serve.py", *(ROOT / "web" / "tests").glob("*.mjs")]
    return {o for f in files if f.exists() for o in re.findall(r"[\"'](--[a-z][a-z0-9-]*)", f.read_text())}


def test_every_cli_option_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(f"{option} ({', '.join(cmds)})" for option, cmds in cli_options().items()
                     if not re.search(rf"{re.escape(option)}(?![\w-])", readme))
    assert missing == [], f"options missing from README.md's usage section: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_option_the_docs_name_exists(path):
    known = set(cli_options()) | script_options() | NAMED_AS_ABSENT | HELP
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", path.read_text()))
    assert sorted(named - known) == [], f"{path.name} names options that nothing defines"


def _same(stated: str, action: argparse.Action) -> bool:
    """Whether ``stated`` is ``action``'s default; an option whose parser default is None (resolved at run time)
    must state the value in its help text instead."""
    stated = re.sub(r"\s*(MiB|s)$", "", stated.replace(",", "").strip()).strip("`")
    if action.default is None:
        return f"default {stated}" in (action.help or "")
    try:
        return float(stated) == float(action.default)
    except (TypeError, ValueError):
        return stated == str(action.default)


def readme_sections() -> list[tuple[str, str]]:
    """``(command, text)`` for each "### `distilvit COMMAND`" section of README.md (subsections included)."""
    parts = re.split(r"^### `distilvit ([\w-]+)`\s*$", (ROOT / "README.md").read_text(), flags=re.M)
    return [(parts[i], re.split(r"^## ", parts[i + 1], flags=re.M)[0]) for i in range(1, len(parts), 2)]


def test_defaults_stated_in_the_readme_are_the_parsers():
    """Each command's README section states defaults as "`--opt` [X]", "`--opt` (X)" (X a plain value),
    "(`--opt`, X)" (the limits table), "`--opt ...` ... (default X", "[--opt X]" (usage lines) or
    "# default --opt X"; each must be that command's parser default."""
    parsers = commands()
    checked, wrong = 0, []
    for command, text in readme_sections():
        actions = {o: a for a in parsers[command]._actions for o in a.option_strings}
        stated = re.findall(r"`(--[a-z0-9-]+)` \[([^\]]+)\]", text)
        stated += re.findall(r"`(--[a-z0-9-]+)` \((\d[\d.,]*)\)", text)
        stated += re.findall(r"\(`(--[a-z0-9-]+)`, ([\d.,]+(?: MiB| s)?)\)", text)
        stated += re.findall(r"`(--[a-z0-9-]+)[^`]*`[^`(]*\(default `?([\w.:-]+)`?[,;)]", text)
        for line in re.findall(rf"^distilvit {command} .*$", text, flags=re.M):  # usage lines: [--port 7860]
            stated += [(o, v) for o, v in re.findall(r"\[(--[a-z0-9-]+) ([^\]\s|]+)\]", line) if not v.isupper()]
        stated += re.findall(r"# default (--[a-z0-9-]+) (\w+)", text)
        for option, value in stated:
            checked += 1
            if option not in actions or not _same(value, actions[option]):
                wrong.append((command, option, value, getattr(actions.get(option), "default", "no such option")))
    assert checked >= 20  # the patterns still find README's defaults
    assert wrong == [], f"README.md states defaults its command's parser does not have: {wrong}"
