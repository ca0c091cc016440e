"""``python -m distilvit.conversations.show PREDICTIONS.jsonl``: print a few answered questions of a QA evaluation
(``distilvit eval`` on a conversation set writes ``predictions.jsonl``), seen and held-out scenes alternating."""

from __future__ import annotations

import argparse
import json
import sys


def show(path: str, count: int = 8) -> list[str]:
    records = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    held = [r for r in records if r.get("held_out")]
    seen = [r for r in records if not r.get("held_out")]
    picked = [r for pair in zip(seen, held) for r in pair] + seen[len(held):] + held[len(seen):]
    lines = []
    for r in picked[:count]:
        mark = "right" if r.get("exact_match") else "WRONG"
        scene = "held-out pair" if r.get("held_out") else "seen pairs"
        lines.append(f"[{scene}] {r.get('question', r['image_id'])} -> {r['prediction']!r} "
                     f"(expected {r['references'][0]!r}: {mark})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("predictions", help="predictions.jsonl written by distilvit eval")
    parser.add_argument("--count", type=int, default=8, help="questions shown")
    args = parser.parse_args(argv)
    print("\n".join(show(args.predictions, args.count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
