"""Write a few images of a dataset split to PNG files (used by ``make demo`` to have images to caption).

    python -m distilvit.data.export_samples --dataset shapes --split test --count 4 --out DIR
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from distilvit.data.loader import load_caption_dataset


def export_samples(datasets: list[str], split: str, count: int, out: str | Path) -> list[Path]:
    """Save the first ``count`` images of ``split`` as ``<image_id>.png``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_caption_dataset(datasets, split)
    paths = []
    for row in rows.select(range(min(count, len(rows)))):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", row["image_id"]) + ".png"
        row["image"].convert("RGB").save(out / name)
        paths.append(out / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", default=["shapes"], help="datasets, as for `distilvit train`")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split to export")
    parser.add_argument("--count", type=int, default=4, help="number of images")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    for path in export_samples(args.dataset, args.split, args.count, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
